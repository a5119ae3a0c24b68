"""The corpora chapter's answers for the findings page (``findings.json``), written from the run's numbers:
how clean the word lists are, and whether the Big Two categories (and the MFD's virtues and vices) differ in
what else could move a reward: frequency, valence, tokenization."""

from __future__ import annotations

from typing import Any

from ...core.findings import Finding
from ...core.formats import interval, number, p_clause
from ...stats import cohen_d_interval, proportion_difference

#: The Big Two corpus the findings describe: the first of these the run read.
BIG2_ORDER = ("big2_nouns", "big2_expanded", "big2_dictionary")
VARIABLES = {"zipf_frequency": "word frequency", "valence": "valence"}
SOURCES = {"zipf_frequency": "Zipf frequency from wordfreq", "valence": "Warriner valence norm"}


def _big2(results: Any) -> str | None:
    present = set(results.table["corpus"])
    return next((c for c in BIG2_ORDER if c in present), None)


def _balance(results: Any, corpus: str, variable: str) -> Finding | None:
    b = results.balance
    rows = b[(b["corpus"] == corpus) & (b["variable"] == variable) & (b["group_b"] != "rest")]
    if "category" in rows.columns:
        rows = rows[rows["category"].isna()]
    if rows.empty:
        return None
    r = rows.iloc[0]
    n_a, n_b = int(r["n_a"]), int(r["n_b"])
    low, high = cohen_d_interval(float(r["cohen_d"]), n_a, n_b)
    d = float(r["cohen_d"])
    clear = (low > 0) or (high < 0)
    direction = "higher" if d > 0 else "lower"
    name = VARIABLES[variable]
    verdict = (
        f"{r['group_a']} words are {direction} in {name} than {r['group_b']} words"
        if clear
        else f"{r['group_a']} and {r['group_b']} words do not differ detectably in {name}"
    )
    return Finding(
        key=f"big2_{'frequency' if variable == 'zipf_frequency' else variable}",
        question=f"Do agency and communion words differ in {name}, which could move a reward by itself?",
        answer=(
            f"In {corpus}, {verdict} (means {number(r['mean_a'])} vs {number(r['mean_b'])}, "
            f"Cohen's d = {number(d)}, 95% CI {interval(low, high)})."
        ),
        estimate=f"d = {number(d)}",
        interval=f"95% CI {interval(low, high)}",
        baseline=f"Mann–Whitney {p_clause(float(r['p_value']))}",
        unit=f"{n_a + n_b} {corpus} words with a {SOURCES[variable]} ({n_a} vs {n_b})",
        would_change=(
            "Words without a norm are left out of the comparison; the statistics chapter adjusts RM ranks for "
            "frequency and valence (its covariate model)."
        ),
        value=d,
        low=low,
        high=high,
        reference=0.0,
        scale="Cohen's d",
        label=f"{r['group_a']} − {r['group_b']}, {name}",
    )


def _token_gaps(results: Any, corpus: str, groups: tuple[str, str], column: str) -> list[tuple]:
    """Per tokenizer: ``(model, difference, low, high, n)`` of the single-token shares of two groups."""
    share = results.token_share
    if share.empty:
        return []
    part = share[share["corpus"] == corpus]
    out = []
    for model, rows in part.groupby("model", sort=True):
        k = (rows["share_one_token"] * rows["n_words"]).groupby(rows[column]).sum()
        n = rows.groupby(column)["n_words"].sum()
        if set(groups) <= set(n.index):
            a, b = groups
            diff = proportion_difference(round(k[a]), int(n[a]), round(k[b]), int(n[b]))
            out.append((model, *diff, int(n[a] + n[b])))
    return out


def _tokenization(results: Any, big2: str | None) -> Finding | None:
    """The largest gap in single-token shares between the categories the later chapters compare."""
    comparisons = []
    if big2:
        comparisons.append((big2, ("Agency", "Communion"), "category"))
    if "mfd2" in set(results.table["corpus"]):
        comparisons.append(("mfd2", ("virtue", "vice"), "subcategory"))
    gaps = [(c, g, *gap) for c, g, col in comparisons for gap in _token_gaps(results, c, g, col)]
    if not gaps:
        return None
    corpus, groups, model, diff, low, high, n = max(gaps, key=lambda x: abs(x[3]))
    each = "; ".join(f"{g[0]} − {g[1]} of {c}, {m}: {number(100 * d, 0)} points" for c, g, m, d, *_ in gaps)
    return Finding(
        key="tokenization",
        question="Are the compared categories equally often a single token, as a reward read from one token assumes?",
        answer=(
            f"Single-token shares (word with a leading space) differ by {each}. The largest gap, {groups[0]} "
            f"minus {groups[1]} words of {corpus} under {model}, is {number(100 * diff, 0)} points "
            f"(95% CI {interval(100 * low, 100 * high, 0)})."
        ),
        estimate=f"{number(100 * diff, 0)} points",
        interval=f"95% CI {interval(100 * low, 100 * high, 0)} points",
        baseline="no difference (0 points)",
        unit=f"{n} {corpus} words, {model} tokenizer",
        would_change=(
            "A reward of a multi-token word depends on how its tokens are pooled; the implicit chapter's primary "
            "analysis keeps single-token words only."
        ),
        value=100 * diff,
        low=100 * low,
        high=100 * high,
        reference=0.0,
        scale="percentage points",
        label=f"{groups[0]} − {groups[1]}, single-token share",
    )


def findings(results: Any) -> list[Finding]:
    """The chapter's findings: the Big Two categories' frequency and valence balance (when the run read a Big
    Two list) and the largest tokenization gap between compared categories (when it counted tokens)."""
    big2 = _big2(results)
    out = [_balance(results, big2, v) for v in VARIABLES] if big2 else []
    out.append(_tokenization(results, big2))
    return [f for f in out if f is not None]
