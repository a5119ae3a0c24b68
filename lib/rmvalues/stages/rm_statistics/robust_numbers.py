"""The numbers and data-chosen phrases of the chapter's robustness sections (glued into its Markdown): the
specification-curve labels, the lineage adjustment, the power of the design and the crossed intervals.

Every key is always present (``n/a`` where the run has no such number). ``bigtwo_*`` keys describe the
central verdict (the first Big Two corpus' ``D``), ``mfd_*`` keys the Moral Foundations contrasts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.formats import interval, number, p_clause, percent, pvalue
from ...stats.specification import LABELS, SUMMARIES, TESTS
from .analysis import ALPHA
from .design import POWER_TARGET
from .specification import WORD_SETS

NA = "n/a"
MFD = "mfd2"

__all__ = ["NA", "numbers", "verdict_phrase"]


def _big2(res: Any) -> str | None:
    return next((c for c in res.params.corpora if c.startswith("big2")), None)


def _row(df: pd.DataFrame, corpus: str | None, analysis: str = "pooled", statistic: str | None = None) -> Any:
    """The first row of ``df`` for a verdict (``None`` when absent)."""
    if df.empty or corpus is None:
        return None
    sel = df[(df["corpus"] == corpus) & (df["analysis"] == analysis)]
    if statistic is not None:
        sel = sel[sel["statistic"] == statistic]
    return next(sel.itertuples(), None)


def verdict_phrase(label_row: Any) -> str:
    """The verdict of one contrast as its specification curve labels it, with the shares behind the label
    (e.g. "inconclusive (94% of 800 specifications share the primary estimate's sign; 27% have p < 0.05)")."""
    if label_row is None:
        return NA
    if int(label_row.n_specifications) == 0:
        return f"{label_row.label} (no specification can be tested with these reward models)"
    return (
        f"{label_row.label} ({percent(label_row.share_same_sign)} of {int(label_row.n_specifications):,} "
        f"specifications share the primary estimate's sign; {percent(label_row.share_significant)} have p < {ALPHA})"
    )


def _curve(res: Any) -> dict[str, str]:
    lab = res.curve_labels
    n_prompt_sets = res.curve["prompt_set"].nunique() if not res.curve.empty else 0
    out = {
        "spec_rule": res.curve_rule.describe(),
        "spec_choices": (
            f"{len(SUMMARIES)} cell summaries × {len(WORD_SETS)} word sets × {n_prompt_sets} prompt sets × "
            f"{len(TESTS)} tests"
        ),
        "spec_n": f"{len(SUMMARIES) * len(WORD_SETS) * n_prompt_sets * len(TESTS):,}",
        "spec_label_counts": NA,
        "bigtwo_spec_verdict": NA,
        "bigtwo_spec_label": NA,
        "mfd_spec_labels": NA,
    }
    if lab.empty:
        return out
    counts = lab["label"].value_counts()
    out["spec_label_counts"] = ", ".join(f"{counts.get(k, 0)} {k}" for k in LABELS) + f" (of {len(lab)})"
    r = _row(lab, _big2(res))
    if r is not None:
        out["bigtwo_spec_verdict"] = verdict_phrase(r)
        out["bigtwo_spec_label"] = str(r.label)
    mfd = lab[lab["corpus"] == MFD]
    if not mfd.empty:
        out["mfd_spec_labels"] = "; ".join(
            f"{r.statistic} {'pooled' if r.analysis == 'pooled' else r.subcategory}: {verdict_phrase(r)}"
            for r in mfd.itertuples()
        )
    return out


def _separation(res: Any) -> dict[str, str]:
    """The MFD contrasts significant in the primary specification, in words: perfectly separated families."""
    rm = res.rm_level
    sig = rm[(rm["corpus"] == MFD) & (rm["verdict"] == "significant")] if not rm.empty else rm
    if sig.empty:
        return {"mfd_primary_significant": "none"}
    lab = res.curve_labels
    parts = []
    for r in sig.itertuples():
        where = "pooled" if r.analysis == "pooled" else f"{r.subcategory} words"
        sep = (
            f"the families are perfectly separated ({r.separation.removeprefix('perfect: ')}), which is the "
            f"smallest p {r.n_rms_a} and {r.n_rms_b} RMs allow"
            if r.separation != "overlap"
            else "the families overlap"
        )
        curve = _row(lab, MFD, r.analysis, r.statistic) if r.analysis == "pooled" else None
        parts.append(
            f"{r.statistic} ({where}): exact {p_clause(r.p_corrected)} after Bonferroni; {sep}; its "
            f"specification curve: {verdict_phrase(curve) if curve is not None else NA}"
        )
    return {"mfd_primary_significant": "; ".join(parts)}


def _lineage(res: Any) -> dict[str, str]:
    out = dict.fromkeys(
        ["lineage_counts", "bigtwo_lineage", "bigtwo_lineage_survives", "bigtwo_within_lineages",
         "bigtwo_lineage_ols", "n_lineages"],
        NA,
    )  # fmt: skip
    within, adj = res.lineage_within, res.lineage_adjusted
    big2 = _big2(res)
    if not res.lineages.empty:
        lin = res.lineages
        fa, fb = res.families
        out["n_lineages"] = str(lin["lineage"].nunique())
        out["lineage_counts"] = "; ".join(
            f"{name}: {int((g['family'] == fa).sum())} {fa}, {int((g['family'] == fb).sum())} {fb}"
            for name, g in lin.groupby("lineage", sort=True)
        )
    r = _row(adj, big2)
    if r is not None:
        out["bigtwo_lineage"] = (
            f"{number(r.stratified_difference, 1)} ranks within lineages (against {number(r.difference, 1)} over "
            f"all RMs), stratified exact {p_clause(r.p_stratified_corrected)} over {int(r.n_relabellings)} "
            f"relabellings within lineage (smallest attainable {pvalue(r.p_min_corrected)})"
        )
        out["bigtwo_lineage_survives"] = str(r.survives_lineage)
        out["bigtwo_lineage_ols"] = (
            f"{number(r.ols_coef, 1)} ranks (SE {number(r.ols_se, 1)}, {1 - ALPHA:.0%} CI "
            f"{interval(r.ols_ci_low, r.ols_ci_high, 1)}, t on {r.ols_df:.0f} df, {p_clause(r.ols_p)}; lineage F "
            f"{p_clause(r.lineage_f_p)})"
        )
    w = within[(within["corpus"] == big2) & (within["analysis"] == "pooled")] if not within.empty else within
    if not w.empty:
        out["bigtwo_within_lineages"] = (
            "; ".join(
                f"{g.lineage}: {number(g.difference, 1)} ranks ({g.n_rms_a} {g.family_a}, {g.n_rms_b} {g.family_b})"
                for g in w.itertuples()
                if pd.notna(g.difference)
            )
            or NA
        )
    return out


def _power(res: Any) -> dict[str, str]:
    keys = ["bigtwo_power", "bigtwo_power_half", "bigtwo_rms_needed", "bigtwo_rms_needed_half", "power_sizes"]
    out = dict.fromkeys(keys, NA) | {"power_target": f"{POWER_TARGET:.0%}"}
    pw, need = res.power, res.power_needed
    big2 = _big2(res)
    rows = pw[(pw["corpus"] == big2) & (pw["analysis"] == "pooled")] if not pw.empty else pw
    if rows.empty:
        return out
    obs = rows.iloc[0]
    at = rows[(rows["n_a"] == obs["n_a"]) & (rows["n_b"] == obs["n_b"])]

    def power_of(frac: float) -> str:
        sel = at[at["effect_fraction"] == frac].set_index("test")["power"]
        return (
            f"{sel.get('exact', float('nan')):.2f} (exact test; Welch {sel.get('welch', float('nan')):.2f})"
        )

    out["bigtwo_power"] = power_of(1.0)
    out["bigtwo_power_half"] = power_of(0.5)
    n = need[(need["corpus"] == big2) & (need["analysis"] == "pooled")].set_index("effect_fraction")[
        "n_per_family"
    ]
    for key, frac in (("bigtwo_rms_needed", 1.0), ("bigtwo_rms_needed_half", 0.5)):
        v = n.get(frac)
        out[key] = NA if v is None else (f"{int(v)}" if pd.notna(v) else "more than 200")
    out["power_sizes"] = ", ".join(str(s) for s in res.params.power_sizes)
    return out | {"power_target": f"{POWER_TARGET:.0%}"}


def _crossed(res: Any) -> dict[str, str]:
    keys = [
        "bigtwo_crossed_ci",
        "bigtwo_rm_only_ci",
        "bigtwo_word_only_ci",
        "bigtwo_crossed_reading",
        "n_crossed",
    ]
    out = dict.fromkeys(keys, NA)
    c = res.crossed
    rows = c[c["corpus"] == _big2(res)] if not c.empty else c
    if rows.empty:
        return out
    by = rows.set_index("resample")
    for key, name in (("bigtwo_crossed_ci", "RMs and words (crossed)"), ("bigtwo_rm_only_ci", "RMs only"),
                      ("bigtwo_word_only_ci", "words only")):  # fmt: skip
        if name in by.index:
            out[key] = interval(by.loc[name, "ci_low"], by.loc[name, "ci_high"], 1)
    if "RMs and words (crossed)" in by.index:
        lo, hi = by.loc["RMs and words (crossed)", ["ci_low", "ci_high"]]
        out["bigtwo_crossed_reading"] = "includes zero" if lo <= 0 <= hi else "excludes zero"
    out["n_crossed"] = f"{int(rows['n_bootstrap'].iloc[0]):,}"
    return out


def _term_tests(r: Any) -> str:
    """One fixed effect's z test and its small-sample t tests, in words."""
    text = f"{number(r.coef, 1)} ranks (SE {number(r.se, 1)}): {p_clause(r.p_z)} against the normal (statsmodels)"
    if pd.notna(r.r_df):
        text += (
            f"; t {number(r.r_t, 2)} on {r.r_df:.0f} df, {p_clause(r.r_p)} (R's nlme, as the paper); "
            f"Satterthwaite {number(r.satterthwaite_df, 1)} df, {p_clause(r.satterthwaite_p)} (lmerTest)"
        )
    else:
        text += (
            f"; t on {r.df_containment:.0f} df (nlme's rule, computed here), {p_clause(r.p_t_containment)}"
        )
    return text


def _small_sample(res: Any) -> dict[str, str]:
    out = dict.fromkeys(["r_status", "bigtwo_family_tests", "bigtwo_three_way_tests", "r_coef_agreement"], NA)
    st = res.r_status
    versions = st.get("versions", {})
    if st.get("r") == "fitted":
        r_version = str(versions.get("r_version", "")).removeprefix("R version ").split(" ")[0]
        out["r_status"] = (
            f"fitted in R {r_version} (nlme {versions.get('nlme_version')}, lmerTest "
            f"{versions.get('lmertest_version')}) in {st.get('seconds', float('nan')):.1f} s"
        )
    elif st:
        out["r_status"] = (
            f"not fitted in R ({st.get('r')}: {st.get('note')}); the df below follow nlme's rule"
        )
    tab = res.small_sample
    rows = tab[tab["corpus"] == _big2(res)] if not tab.empty else tab
    if rows.empty:
        return out
    fam = rows[rows["term"].str.fullmatch(r"family\[T\.[^\]]+\]")]
    three = rows[rows["term"].str.count(":") == 2]
    if len(fam):
        out["bigtwo_family_tests"] = _term_tests(next(fam.itertuples()))
    if len(three):
        out["bigtwo_three_way_tests"] = _term_tests(next(three.itertuples()))
    diff = tab["max_abs_coef_diff"].max()
    if pd.notna(diff):
        out["r_coef_agreement"] = f"{diff:.1e}"
    return out


def numbers(res: Any) -> dict[str, str]:
    """Every key of the robustness sections (see the module docstring)."""
    out: dict[str, str] = {}
    for part in (_curve, _separation, _lineage, _power, _crossed, _small_sample):
        out |= part(res)
    return out
