"""One look across the book: the colour of each base-model family (every chapter's figures use it)."""

from __future__ import annotations

from typing import Any

#: Colours of the base families (the paper's Gemma red and Llama blue; others get fixed distinct colours).
FAMILY_COLORS: dict[str, str] = {
    "gemma": "#DB4437",
    "llama": "#0064E0",
    "smollm": "#0F9D58",
    "qwen": "#7B1FA2",
}
#: Colours given, in order, to labels that are not a known family (models, categories, data sets).
PALETTE: tuple[str, ...] = ("#DB4437", "#0064E0", "#0F9D58", "#F4B400", "#7B1FA2", "#00838F")
FALLBACK = "#555555"


def family_color(family: str) -> str:
    """The colour of a base family (case-insensitive; unknown families are grey)."""
    return FAMILY_COLORS.get(str(family).lower(), FALLBACK)


def label_colors(labels: list[str] | tuple[str, ...] | set[str]) -> dict[str, str]:
    """Fixed colours for arbitrary labels: known families keep theirs, the rest take the palette in order."""
    out: dict[str, str] = {}
    rest = iter(PALETTE * 4)
    for label in sorted(labels):
        out[label] = FAMILY_COLORS.get(str(label).lower()) or next(rest)
    return out


def notebook_display(max_colwidth: int = 90) -> None:
    """Display settings of the book's pages: pandas tables of a readable width and precision, no warning
    about tqdm's missing widgets."""
    import warnings

    import pandas as pd

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    pd.set_option("display.max_colwidth", max_colwidth)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 3)


def note_figure(text: str) -> Any:
    """A small figure that only says ``text``: a figure cell shows it when the run has nothing to plot (one
    base model, a corpus without a category, a skipped step), so the numbered figure and the prose's
    references to it stay valid on every fork."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    return fig
