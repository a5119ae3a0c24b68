"""The statistics chapter's answers for the findings page (``findings.json``): the central family difference
of each corpus at the unit that was sampled, the reward model, read by its specification curve's label (the
verdict), with the primary specification's numbers, the paper's model beside them, and how robust the verdict
is: its curve's shares, the lineage-adjusted estimate, the power of the design, the crossed (RMs and words)
interval and the word-label null."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.findings import Finding
from ...core.formats import interval, number, p_clause, pvalue
from .analysis import VERDICTS
from .robust_numbers import verdict_phrase

#: The verdict a specification-curve label gives a family difference, in the findings' words.
READINGS = {
    "robust": "a robust family difference",
    "fragile": "a fragile family difference (significant under some reasonable analyses, not most)",
    "inconclusive": "inconclusive",
    "untestable": "untestable with these reward models",
}


def _paper_p(models: pd.DataFrame, r: Any) -> tuple[float, int] | None:
    """The paper's random-intercept p-value of the same contrast and the points it treats as independent."""
    if models.empty:
        return None
    m = models[
        (models["corpus"] == r.corpus)
        & (models["analysis"] == r.analysis)
        & (models["statistic"] == r.statistic)
        & models["method"].str.startswith("random intercept")
    ]
    return (float(m["p"].iloc[0]), int(m["n_units"].iloc[0])) if len(m) else None


def _match(df: pd.DataFrame, r: Any) -> Any:
    """The row of ``df`` for the pooled verdict of ``r`` (None when ``df`` has none)."""
    if df.empty:
        return None
    sel = df[(df["corpus"] == r.corpus) & (df["analysis"] == r.analysis) & (df["statistic"] == r.statistic)]
    return next(sel.itertuples(), None)


def _primary(r: Any) -> str:
    """The primary specification's outcome in words."""
    if r.verdict == VERDICTS[0]:
        sep = "; the families are perfectly separated" if r.separation != "overlap" else ""
        return f"significant in the primary specification{sep}"
    if r.verdict == VERDICTS[1]:
        return "inconclusive in the primary specification (its interval includes zero)"
    return (
        f"untestable in the primary specification: no split of {r.n_rms_a} and {r.n_rms_b} reward models can "
        f"reach significance after the correction (smallest attainable {p_clause(r.p_min_corrected)})"
    )


def _robustness(res: Any, r: Any) -> str:
    """How robust the verdict is: curve, lineage, power, crossed interval and word-label null."""
    parts = []
    lab = _match(res.curve_labels, r)
    if lab is not None:
        parts.append(f"specification curve: {verdict_phrase(lab)}")
    lin = _match(res.lineage_adjusted, r)
    if lin is not None:
        parts.append(
            f"within lineages {number(lin.stratified_difference, 1)} ranks (stratified exact "
            f"{p_clause(lin.p_stratified_corrected)}): {lin.survives_lineage}"
        )
    pw = res.power
    if not pw.empty:
        sel = pw[(pw["corpus"] == r.corpus) & (pw["analysis"] == r.analysis) & (pw["statistic"] == r.statistic)
                 & (pw["n_a"] == r.n_rms_a) & (pw["n_b"] == r.n_rms_b) & (pw["effect_fraction"] == 1.0)
                 & (pw["test"] == "exact")]  # fmt: skip
        need = _match(res.power_needed[res.power_needed["effect_fraction"] == 1.0], r)
        if len(sel):
            text = f"power {sel['power'].iloc[0]:.2f} at the observed effect"
            if need is not None:
                n = need.n_per_family
                text += f" ({'more than 200' if pd.isna(n) else int(n)} RMs per family needed for 80%)"
            parts.append(text)
    c = res.crossed
    crossed = c[
        (c["corpus"] == r.corpus) & (c["statistic"] == r.statistic) & (c["resample"].str.contains("crossed"))
    ]
    if len(crossed):
        parts.append(
            f"RMs and words resampled together: 95% CI {interval(crossed['ci_low'].iloc[0], crossed['ci_high'].iloc[0], 1)}"
        )
    null = res.null_summary
    if not null.empty:
        rows = null[
            (null["corpus"] == r.corpus) & (null["statistic"] == "range") & (null["null"] == "all words")
        ]
        if len(rows):
            parts.append(
                "word-label null "
                + ", ".join(f"{p_clause(x.p_perm)} ({x.framing})" for x in rows.itertuples())
            )
    return "; ".join(parts)


def _corpus_finding(rows: pd.DataFrame, res: Any) -> Finding:
    """The contrast of one corpus (the one with the smallest corrected p when there are several)."""
    r = next(rows.sort_values(["p_corrected", "p_exact"]).itertuples())
    n_rm = int(r.n_rms_a + r.n_rms_b)
    several = len(rows) > 1
    lab = _match(res.curve_labels, r)
    reading = READINGS[lab.label] if lab is not None else "not assessed by a specification curve"
    paper = _paper_p(res.models, r)
    what = (
        f"{r.category} words gain in rank relative to {r.versus} words from negative to positive prompts "
        f"({r.statistic})"
    )
    answer = (
        f"In {r.corpus}, how much {what} averages {number(r.mean_a, 1)} over {r.n_rms_a} {r.family_a} and "
        f"{number(r.mean_b, 1)} over {r.n_rms_b} {r.family_b} reward models: {r.family_b} − {r.family_a} = "
        f"{number(r.difference, 1)} ranks (95% CI {interval(r.ci_low, r.ci_high, 1)}, exact "
        f"{p_clause(r.p_corrected)} over all {r.n_splits} splits of the {n_rm} RMs), {_primary(r)}. Across "
        f"reasonable analyses the verdict is {reading}"
        + (f" ({verdict_phrase(lab).split(' (', 1)[1]}" if lab is not None else "")
        + "."
    )
    if several:
        n_sig = int((rows["verdict"] == VERDICTS[0]).sum())
        answer = (
            f"In {r.corpus}, {n_sig} of {len(rows)} foundation contrasts {'is' if n_sig == 1 else 'are'} "
            f"significant at the RM level in the primary specification (Bonferroni over {r.n_tests}). The "
            "strongest: " + answer.split(", ", 1)[1]
        )
    if paper is not None:
        answer += (
            f" The paper's random-intercept model gives {p_clause(paper[0])} for the same contrast by treating "
            f"{paper[1]:,} (RM, prompt) points as independent."
        )
    baseline = f"exact permutation {p_clause(r.p_corrected)}" + (
        f" (Bonferroni over {r.n_tests})" if r.n_tests > 1 else ""
    )
    return Finding(
        key=f"{r.corpus}_family",
        question=(
            f"Do {r.family_a}- and {r.family_b}-based reward models differ in how prompt framing moves "
            f"{'the moral foundations' if several else f'{r.category} against {r.versus} words'}?"
        ),
        answer=answer,
        estimate=f"{number(r.difference, 1)} ranks",
        interval=f"95% CI {interval(r.ci_low, r.ci_high, 1)}" + (" (not adjusted)" if r.n_tests > 1 else ""),
        baseline=baseline + (f"; paper's model {p_clause(paper[0])}" if paper is not None else ""),
        unit=f"{n_rm} reward models ({r.n_rms_a} {r.family_a}, {r.n_rms_b} {r.family_b})",
        would_change=(
            f"More reward models per family (with these counts the smallest attainable p is "
            f"{pvalue(r.p_min_corrected)}); the families also differ in developer, recipe, size and preference "
            "data, so base family is confounded with them (the lineage adjustment holds the recipe fixed only)."
        ),
        robustness=_robustness(res, r),
        value=float(r.difference),
        low=float(r.ci_low),
        high=float(r.ci_high),
        reference=0.0,
        scale=f"difference of mean {r.statistic} ({r.family_b} − {r.family_a}), ranks",
        label=f"{r.corpus}: {r.family_b} − {r.family_a}, {r.statistic}",
    )


def findings(results: Any) -> list[Finding]:
    """One finding per corpus with an RM-level contrast (pooled analysis)."""
    rm = results.rm_level
    if rm.empty:
        return []
    pooled = rm[rm["analysis"] == "pooled"]
    return [_corpus_finding(rows, results) for _, rows in pooled.groupby("corpus", sort=True)]
