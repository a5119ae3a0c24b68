"""Sentences of the corpora chapter, built from the numbers of the run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _p(p: float) -> str:
    return "p < .001" if p < 0.001 else f"p = {p:.3f}"


def findings(
    balance: pd.DataFrame,
    tokens_summary: pd.DataFrame | None = None,
    *,
    min_effect: float = 0.2,
    alpha: float = 0.05,
) -> str:
    """Markdown bullets stating the confounds found: category differences in a variable with |Cohen's d| >=
    ``min_effect`` and p < ``alpha`` (from :func:`category_balance`), and the one-token shares per model."""
    names = {"zipf_frequency": "word frequency (Zipf)", "valence": "valence", "arousal": "arousal"}
    lines = []
    for _, r in balance.iterrows():
        d = r["cohen_d"]
        if not np.isfinite(d) or abs(d) < min_effect or not r["p_value"] < alpha:
            continue
        where = r["corpus"]
        if "category" in r.index and isinstance(r["category"], str):  # a `within="category"` comparison
            where += f", {r['category']}"
        other = f"the rest of {r['corpus']}" if r["group_b"] == "rest" else f"{r['group_b']} words"
        lines.append(
            f"- **{where}**: {r['group_a']} words are {'higher' if d > 0 else 'lower'} in "
            f"{names.get(r['variable'], r['variable'])} than {other} (means {r['mean_a']:.2f} vs "
            f"{r['mean_b']:.2f}; d = {d:.2f}, rank-biserial = {r['rank_biserial']:.2f}, {_p(r['p_value'])}; "
            f"n = {int(r['n_a'])} vs {int(r['n_b'])})."
        )
    if not lines:
        lines.append(f"- No category difference reaches |d| >= {min_effect} with p < {alpha}.")
    if tokens_summary is not None and not tokens_summary.empty:
        for model, part in tokens_summary.groupby("model", sort=True):
            n = part["n_words"].sum()
            bare = part["one_token_bare"].sum() / n
            space = part["one_token_space"].sum() / n
            lines.append(
                f"- **{model}** tokenizer: of {n} words (counted once per corpus), {space:.0%} are a single "
                f"token with a leading space and {bare:.0%} without one; {part['one_token_space_only'].sum()} "
                f"are one token only with the space, {part['one_token_bare_only'].sum()} only without it."
            )
    return "\n".join(lines)


def _row(balance: pd.DataFrame, corpus: str, variable: str) -> pd.Series | None:
    rows = balance[
        (balance["corpus"] == corpus) & (balance["variable"] == variable) & (balance["group_b"] != "rest")
    ]
    if "category" in rows.columns:
        rows = rows[rows["category"].isna()]
    return rows.iloc[0] if len(rows) else None


def key_numbers(results: Any) -> dict[str, str]:
    """The numbers the chapter's prose cites, as text to glue (every key always present; ``n/a`` where the
    run has no such number, e.g. a run without the Big Two nouns)."""
    from ...core.display import number, pvalue

    table, issues = results.table, results.issues
    out = {
        "n_corpora": str(table["corpus"].nunique()),
        "n_entries": f"{len(table):,}",
        "n_words": f"{table['word'].nunique():,}",
        "n_findings": f"{len(issues):,}",
        "n_duplicates": f"{int((issues['check'] == 'duplicate').sum()):,}",
        "n_two_labels": f"{int((issues['check'] == 'two_categories').sum()):,}",
        "n_stems": f"{len(results.stems):,}",
        "n_stems_empty": f"{int((results.stems['n_expansions'] == 0).sum()) if len(results.stems) else 0:,}",
        "valence_coverage": f"{table['valence'].notna().mean():.0%}",
    }
    for var, key in (("valence", "valence"), ("zipf_frequency", "frequency")):
        r = _row(results.balance, "big2_nouns", var)
        out[f"big2_{key}_d"] = number(r["cohen_d"]) if r is not None else "n/a"
        out[f"big2_{key}_p"] = pvalue(r["p_value"]) if r is not None else "n/a"
        out[f"big2_{key}_means"] = (
            f"{number(r['mean_a'])} vs {number(r['mean_b'])}" if r is not None else "n/a"
        )
    ts = results.token_summary
    shares = (
        ts.groupby("model")[["one_token_space", "n_words"]].sum()
        if not ts.empty
        else pd.DataFrame(columns=["one_token_space", "n_words"])
    )
    out["one_token_shares"] = (
        ", ".join(f"{m} {r.one_token_space / r.n_words:.0%}" for m, r in shares.iterrows())
        or "n/a (no tokenizers)"
    )
    return out


def stems_note(results: Any) -> str:
    """The closing sentence on wildcard stems: it points to the stems table only where the run shows one
    (corpora without wildcards, e.g. a Big Two run alone, have none)."""
    if results.stems is None or results.stems.empty:
        return (
            "The selected corpora have no wildcard stems, so no mechanical expansion enters this run's word "
            "lists."
        )
    return (
        "Wildcard dictionaries are built to count words in running text, and their mechanical expansion shows "
        "it: short stems pull in unrelated words and overlapping stems put some words under both categories "
        "({numref}`tbl-corpora-stems`)."
    )


def outside_project_note(results: Any) -> str:
    """A warning for each corpus read from a file outside the project folder (empty when there is none): the
    book's build then depends on a file the repository does not hold. The manifest records the file's path
    and sha256."""
    if results.outside is None or results.outside.empty:
        return ""
    lines = [
        f"- corpus **{r['corpus']}** is read from `{r['path']}`, outside the project: the book's build depends "
        f"on a file the repository does not hold (sha256 `{r['sha256'][:12]}…`, recorded in the run's manifest)."
        for _, r in results.outside.iterrows()
    ]
    return (
        ":::{warning}\n"
        + "\n".join(lines)
        + "\n\nMove the file into the project (e.g. under `data/`) and point its `path:` in `config/corpora.yaml` "
        "at it, or register it as a data set with its URL and sha256 in `config/datasets.yaml`.\n:::"
    )
