"""The paper's 54 value-laden prompts: adjective (its framing) x frame x concision style.

Prompt keys are ``<adjective>_<frame>_<style>`` (``greatest_ever_one``); the texts come from the paper's
release through the data layer (``paper/config/prompts``, sha256-checked). :func:`select_prompts` validates
a selection (an empty one means all 54) and returns it in the design's order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd
import yaml

from . import datasets

#: The paper's prompt design: adjective (its framing) x frame x concision style = 54 prompts.
POSITIVE_ADJECTIVES: tuple[str, ...] = ("best", "greatest", "good")
NEGATIVE_ADJECTIVES: tuple[str, ...] = ("worst", "bad", "terrible")
FRAMES: tuple[str, ...] = ("ever", "world", "time")
STYLES: tuple[str, ...] = ("one", "single", "please")
FRAMINGS: tuple[str, ...] = ("positive", "negative")

#: Name of the data set holding the 54 prompts (YAML: key -> prompt text).
PROMPTS_DATASET = "paper/config/prompts"

__all__ = [
    "FRAMES",
    "FRAMINGS",
    "NEGATIVE_ADJECTIVES",
    "POSITIVE_ADJECTIVES",
    "PROMPTS_DATASET",
    "STYLES",
    "framing_of",
    "load_prompts",
    "prompt_ids",
    "prompt_problem",
    "prompt_table",
    "prompts_checksum",
    "select_prompts",
]


def prompt_ids() -> list[str]:
    """The 54 prompt keys of the paper's design, in its order (no I/O)."""
    return [
        f"{adj}_{frame}_{style}"
        for adj, frame, style in itertools.product(POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES, FRAMES, STYLES)
    ]


def framing_of(prompt_id: str) -> str:
    """``positive`` or ``negative``, from the prompt key's adjective (its first ``_`` part)."""
    adjective = str(prompt_id).split("_", 1)[0]
    if adjective in POSITIVE_ADJECTIVES:
        return "positive"
    if adjective in NEGATIVE_ADJECTIVES:
        return "negative"
    raise ValueError(
        f"prompt {prompt_id!r}: unknown adjective {adjective!r}; prompt keys start with one of "
        f"{', '.join(POSITIVE_ADJECTIVES)} (positive) or {', '.join(NEGATIVE_ADJECTIVES)} (negative)"
    )


def prompt_problem(prompts: Sequence[str] | None, key: str = "prompts") -> str | None:
    """A problem message for an invalid prompt selection (unknown ids), else None."""
    if prompts is None:
        return None
    valid = set(prompt_ids())
    unknown = [p for p in prompts if p not in valid]
    if not unknown:
        return None
    return (
        f"{key}: unknown prompt id(s) {unknown}; valid ids are <adjective>_<frame>_<style> with adjective in "
        f"{POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES}, frame in {FRAMES}, style in {STYLES} "
        f"(e.g. 'greatest_ever_one'); an empty list selects all 54"
    )


def select_prompts(prompts: Sequence[str] | None = None) -> list[str]:
    """The selected prompt ids in the design's order (``None`` or empty: all 54); ``ValueError`` names
    unknown ids and the valid form."""
    problem = prompt_problem(prompts)
    if problem:
        raise ValueError(problem)
    valid = prompt_ids()
    if not prompts:
        return valid
    chosen = set(prompts)
    return [p for p in valid if p in chosen]


def load_prompts() -> pd.DataFrame:
    """The paper's prompts: ``prompt_id, text, adjective, frame, style, framing`` (54 rows).

    Raises :class:`ValueError` when the released file does not match the 6 x 3 x 3 design.
    """
    raw = yaml.safe_load(datasets.fetch(PROMPTS_DATASET).read_text(encoding="utf-8")) or {}
    expected = prompt_ids()
    if sorted(raw) != sorted(expected):
        missing = sorted(set(expected) - set(raw))
        extra = sorted(set(raw) - set(expected))
        raise ValueError(
            f"{PROMPTS_DATASET}: does not match the 54-prompt design (missing {missing}, extra {extra})"
        )
    rows = []
    for key in expected:
        adjective, frame, style = key.split("_")
        rows.append(
            {
                "prompt_id": key,
                "text": str(raw[key]),
                "adjective": adjective,
                "frame": frame,
                "style": style,
                "framing": framing_of(key),
            }
        )
    return pd.DataFrame(rows)


def prompt_table(prompts: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of :func:`load_prompts` for a selection, in the order given (``None``/empty: all 54)."""
    table = load_prompts().set_index("prompt_id")
    chosen = list(prompts) if prompts else prompt_ids()
    select_prompts(chosen)  # raises on unknown ids
    return table.loc[chosen].reset_index()


def prompts_checksum() -> dict[str, str]:
    """``{data-set name: sha256}`` of the prompts file (for manifests)."""
    return {PROMPTS_DATASET: datasets.get(PROMPTS_DATASET).sha256}
