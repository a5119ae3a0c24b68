"""The values the corpora chapter's prose cites (glued), and the confounds it lists, computed from the run.
The sentences themselves are the notebook's Markdown."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.formats import count, number, p_clause, percent, pvalue

#: A category difference is listed as a confound from this |Cohen's d| on ...
MIN_EFFECT = 0.2
#: ... when its Mann-Whitney test has p below this.
ALPHA = 0.05

_VARIABLES = {"zipf_frequency": "word frequency (Zipf)", "valence": "valence", "arousal": "arousal"}


def confounds(balance: pd.DataFrame, *, min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> pd.DataFrame:
    """The category differences that can masquerade as a value bias: |Cohen's d| >= ``min_effect`` and
    p < ``alpha`` (rows of :func:`~rmvalues.stages.corpora.analysis.category_balance`), one row each, as the
    chapter's Summary table shows them."""
    rows = []
    for _, r in balance.iterrows():
        d = r["cohen_d"]
        if not np.isfinite(d) or abs(d) < min_effect or not r["p_value"] < alpha:
            continue
        where = r["corpus"]
        if "category" in r.index and isinstance(r["category"], str):  # a `within="category"` comparison
            where += f", {r['category']}"
        rows.append(
            {
                "word list": where,
                "variable": _VARIABLES.get(r["variable"], r["variable"]),
                "words": f"{r['group_a']} words",
                "are": "higher" if d > 0 else "lower",
                "than": f"the rest of {r['corpus']}" if r["group_b"] == "rest" else f"{r['group_b']} words",
                "means": f"{number(r['mean_a'])} vs {number(r['mean_b'])}",
                "Cohen's d": number(d),
                "rank-biserial": number(r["rank_biserial"]),
                "p": pvalue(r["p_value"]),
                "n": f"{int(r['n_a'])} vs {int(r['n_b'])}",
            }
        )
    return pd.DataFrame(rows)


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
    table, issues = results.table, results.issues
    out = {
        "n_corpora": str(table["corpus"].nunique()),
        "n_entries": count(len(table)),
        "n_words": count(table["word"].nunique()),
        "n_findings": count(len(issues)),
        "n_duplicates": count((issues["check"] == "duplicate").sum()),
        "n_two_labels": count((issues["check"] == "two_categories").sum()),
        "n_stems": count(len(results.stems)),
        "n_stems_empty": count((results.stems["n_expansions"] == 0).sum() if len(results.stems) else 0),
        "valence_coverage": percent(table["valence"].notna().mean()),
        "n_confounds": count(len(confounds(results.all_balance))),
        "min_effect": number(MIN_EFFECT, 1),
        "alpha": number(ALPHA, 2),
    }
    for var, key in (("valence", "valence"), ("zipf_frequency", "frequency")):
        r = _row(results.balance, "big2_nouns", var)
        out[f"big2_{key}_d"] = number(r["cohen_d"]) if r is not None else "n/a"
        out[f"big2_{key}_p"] = p_clause(r["p_value"]) if r is not None else "p n/a"
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
        ", ".join(f"{m} {percent(r.one_token_space / r.n_words)}" for m, r in shares.iterrows())
        or "n/a (no tokenizers)"
    )
    return out


def outside_project(results: Any) -> pd.DataFrame:
    """The corpora read from a file outside the project folder (the manifest records path and sha256), as
    the page's warning lists them; empty when there is none."""
    if results.outside is None or results.outside.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "corpus": results.outside["corpus"],
            "read from": results.outside["path"].map(lambda p: f"`{p}`"),
            "sha256": results.outside["sha256"].map(lambda h: f"`{h[:12]}…`"),
        }
    )
