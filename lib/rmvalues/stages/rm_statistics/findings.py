"""The statistics chapter's answers for the findings page (``findings.json``): the central family difference
of each corpus at the unit that was sampled, the reward model, side by side with the paper's model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.display import interval, number, pvalue
from ...core.findings import Finding
from .analysis import VERDICTS


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


def _reading(r: Any) -> str:
    if r.verdict == VERDICTS[0]:
        return "the reward models establish a family difference"
    if r.verdict == VERDICTS[1]:
        return "the reward models do not establish a family difference (the interval includes zero)"
    return (
        f"no split of {r.n_rms_a} and {r.n_rms_b} reward models can reach significance after the correction "
        f"(smallest attainable p {pvalue(r.p_min_corrected)})"
    )


def _corpus_finding(rows: pd.DataFrame, models: pd.DataFrame) -> Finding:
    """The contrast of one corpus (the one with the smallest corrected p when there are several)."""
    r = next(rows.sort_values(["p_corrected", "p_exact"]).itertuples())
    n_rm = int(r.n_rms_a + r.n_rms_b)
    several = len(rows) > 1
    n_sig = int((rows["verdict"] == VERDICTS[0]).sum())
    paper = _paper_p(models, r)
    what = (
        f"{r.category} words gain in rank relative to {r.versus} words from negative to positive prompts "
        f"({r.statistic})"
    )
    answer = (
        f"In {r.corpus}, how much {what} averages {number(r.mean_a, 1)} over {r.n_rms_a} {r.family_a} and "
        f"{number(r.mean_b, 1)} over {r.n_rms_b} {r.family_b} reward models: {r.family_b} − {r.family_a} = "
        f"{number(r.difference, 1)} ranks (95% CI {interval(r.ci_low, r.ci_high, 1)}, exact p "
        f"{pvalue(r.p_corrected)} over all {r.n_splits} splits of the {n_rm} RMs); {_reading(r)}."
    )
    if several:
        answer = (
            f"In {r.corpus}, {n_sig} of {len(rows)} foundation contrasts {'is' if n_sig == 1 else 'are'} "
            "significant at the RM level "
            f"(Bonferroni over {r.n_tests}). The strongest: " + answer.split(", ", 1)[1]
        )
    if paper is not None:
        answer += (
            f" The paper's random-intercept model gives p {pvalue(paper[0])} for the same contrast by treating "
            f"{paper[1]:,} (RM, prompt) points as independent."
        )
    baseline = f"exact permutation p {pvalue(r.p_corrected)}" + (
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
        baseline=baseline + (f"; paper's model p {pvalue(paper[0])}" if paper is not None else ""),
        unit=f"{n_rm} reward models ({r.n_rms_a} {r.family_a}, {r.n_rms_b} {r.family_b})",
        would_change=(
            f"More reward models per family (with these counts the smallest attainable p is "
            f"{pvalue(r.p_min_corrected)}); the families also differ in developer, size and preference data, "
            "so base family is confounded with them."
        ),
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
    return [_corpus_finding(rows, results.models) for _, rows in pooled.groupby("corpus", sort=True)]
