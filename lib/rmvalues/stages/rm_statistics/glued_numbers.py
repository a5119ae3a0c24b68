"""The numbers the chapter's prose cites (glued into its Markdown with ``{glue:text}``), computed from a run.

Every key is always present: ``n/a`` where the run has no such number (a corpus not analysed, a test that
cannot be formed with one RM per family, a run without a split corpus). The keys ``bigtwo_*`` describe the
first Big Two corpus analysed (``big2_nouns`` by default) and ``mfd_*`` the Moral Foundations Dictionary
(``mfd2``); ``three_way_all`` and ``rm_level_all`` cover every corpus of the run.
"""

from __future__ import annotations

import re
from math import comb
from typing import Any

import numpy as np
import pandas as pd

from ...core.formats import interval, number, p_clause, pvalue
from . import readings, robust_numbers
from .analysis import ALPHA, VERDICTS
from .tables import readable_term

NA = "n/a"
#: The Moral Foundations corpus the ``mfd_*`` keys describe.
MFD = "mfd2"


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["analysis"] == "pooled"] if "analysis" in df.columns else df


def _big2(res: Any) -> str | None:
    """The first Big Two corpus of the run (``big2_nouns`` by default), or None."""
    return next((c for c in res.params.corpora if c.startswith("big2")), None)


def _ranks(x: float) -> str:
    return NA if pd.isna(x) else f"{number(x, 1)} ranks"


def _design(res: Any) -> dict[str, str]:
    scores = res.scores[res.scores["family"].isin(res.families)]
    fa, fb = res.families
    rms = scores.drop_duplicates("model")
    return {
        "scores": res.params.scores,
        "corpora": ", ".join(res.params.corpora),
        "family_a": fa,
        "family_b": fb,
        "n_rms": str(len(rms)),
        "n_rms_a": str(int((rms["family"] == fa).sum())),
        "n_rms_b": str(int((rms["family"] == fb).sum())),
        "n_prompts": str(scores["prompt_id"].nunique()),
        "n_scores": f"{len(res.scores):,}",
        "alpha": f"{ALPHA:g}",
        "ci_level": f"{1 - ALPHA:.0%}",
    }


def _term_text(r: Any) -> str:
    return (
        f"{number(r.coef, 1)} ranks (SE {number(r.se, 1)}, {1 - ALPHA:.0%} CI "
        f"{interval(r.ci_low, r.ci_high, 1)}, {p_clause(r.p)})"
    )


def _category(term: str) -> str:
    """The category level of a model term (``...:category[T.Care]:...`` -> ``Care``)."""
    m = re.search(r"category\[T\.([^\]]+)\]", term)
    return m.group(1) if m else readable_term(term)


def _three_way(res: Any) -> dict[str, str]:
    tw = _pooled(res.three_way)
    out = dict.fromkeys(
        [
            "bigtwo_three_way",
            "bigtwo_three_way_term",
            "bigtwo_three_way_se",
            "bigtwo_three_way_ci",
            "bigtwo_three_way_p",
            "mfd_three_way",
            "mfd_three_way_n_sig",
            "mfd_reference",
            "three_way_all",
        ],
        NA,
    )
    big2 = _big2(res)
    rows = tw[tw["corpus"] == big2]
    if big2 is not None and not rows.empty:
        r = rows.iloc[0]
        out |= {
            "bigtwo_three_way": _ranks(r["coef"]),
            "bigtwo_three_way_term": readable_term(r["term"]),
            "bigtwo_three_way_se": number(r["se"], 1),
            "bigtwo_three_way_ci": interval(r["ci_low"], r["ci_high"], 1),
            "bigtwo_three_way_p": p_clause(r["p"]),
        }
    mfd = tw[tw["corpus"] == MFD]
    if not mfd.empty:
        out["mfd_three_way"] = "; ".join(
            f"{_category(r.term)} {number(r.coef, 1)} (SE {number(r.se, 1)}, {interval(r.ci_low, r.ci_high, 1)})"
            for r in mfd.itertuples()
        )
        out["mfd_three_way_n_sig"] = f"{int((mfd['p'] <= ALPHA).sum())} of {len(mfd)}"
        coding = res.coding
        ref = coding[
            (coding["corpus"] == MFD) & (coding["analysis"] == "pooled") & (coding["factor"] == "category")
        ]
        out["mfd_reference"] = str(ref["reference"].iloc[0]) if not ref.empty else NA
    if not tw.empty:
        out["three_way_all"] = "; ".join(
            f"{r.corpus}, {readable_term(r.term)}: {_term_text(r)}" for r in tw.itertuples()
        )
    return out


def _rm_level(res: Any) -> dict[str, str]:
    rm = _pooled(res.rm_level)
    keys = ["statistic", "means", "diff", "ci", "p", "p_corrected", "splits", "verdict"]
    out = {f"bigtwo_rm_{k}": NA for k in keys}
    out |= dict.fromkeys(
        ["mfd_rm_n_tests", "mfd_rm_n_sig", "mfd_rm_n_untestable", "mfd_rm_significant", "rm_level_all"], NA
    )
    big2 = _big2(res)
    rows = rm[rm["corpus"] == big2]
    if big2 is not None and not rows.empty:
        r = rows.iloc[0]
        out |= {
            "bigtwo_rm_statistic": str(r["statistic"]),
            "bigtwo_rm_means": (
                f"{number(r['mean_a'], 1)} over the {r['n_rms_a']} {r['family_a']} RMs and "
                f"{number(r['mean_b'], 1)} over the {r['n_rms_b']} {r['family_b']} RMs"
            ),
            "bigtwo_rm_diff": _ranks(r["difference"]),
            "bigtwo_rm_ci": NA if pd.isna(r["ci_low"]) else interval(r["ci_low"], r["ci_high"], 1),
            "bigtwo_rm_p": p_clause(r["p_exact"]),
            "bigtwo_rm_p_corrected": pvalue(r["p_corrected"]),
            "bigtwo_rm_splits": f"{int(r['n_splits']):,}",
            "bigtwo_rm_verdict": str(r["verdict"]),
        }
    mfd = rm[rm["corpus"] == MFD]
    if not mfd.empty:
        sig = mfd[mfd["verdict"] == VERDICTS[0]]
        out |= {
            "mfd_rm_n_tests": str(len(mfd)),
            "mfd_rm_n_sig": str(len(sig)),
            "mfd_rm_n_untestable": str(int((mfd["verdict"] == VERDICTS[2]).sum())),
            "mfd_rm_significant": "; ".join(
                f"{r.statistic}, {r.family_b} \u2212 {r.family_a} = {_ranks(r.difference)}, {1 - ALPHA:.0%} CI "
                f"{interval(r.ci_low, r.ci_high, 1)}, exact {p_clause(r.p_exact)} "
                f"(Bonferroni {pvalue(r.p_corrected)})"
                for r in sig.itertuples()
            )
            or "none",
        }
    if not rm.empty:
        out["rm_level_all"] = "; ".join(
            f"{corpus}: {int((g['verdict'] == VERDICTS[0]).sum())} of {len(g)} significant"
            for corpus, g in rm.groupby("corpus", sort=False)
        )
    return out


def _attainable(res: Any) -> dict[str, str]:
    """The smallest p-values an exact test over the splits of the RMs can give."""
    out = dict.fromkeys(["p_min", "n_splits", "bigtwo_panels_p_min", "mfd_panels_p_min", "mfd_rm_p_min"], NA)
    rm, panels = _pooled(res.rm_level), _pooled(res.panels)
    sizes = rm if not rm.empty else panels
    if not sizes.empty:
        na, nb = int(sizes["n_rms_a"].iloc[0]), int(sizes["n_rms_b"].iloc[0])
        n = comb(na + nb, na)
        out |= {"p_min": f"{min(1.0, 2 / n):.4f}", "n_splits": f"{n:,}"}
    for key, corpus in (("bigtwo_panels_p_min", _big2(res)), ("mfd_panels_p_min", MFD)):
        rows = panels[panels["corpus"] == corpus]
        if not rows.empty:
            out[key] = f"{rows['p_rm_min'].iloc[0]:.3f} (Bonferroni over {len(rows)} panels)"
    mfd = rm[rm["corpus"] == MFD]
    if not mfd.empty:
        out["mfd_rm_p_min"] = f"{mfd['p_min_corrected'].iloc[0]:.3f} (Bonferroni over {len(mfd)} statistics)"
    return out


def _panels(res: Any) -> dict[str, str]:
    p = _pooled(res.panels)
    if p.empty:
        return dict.fromkeys(
            ["n_panels", "n_panels_point_sig", "n_panels_rm_testable", "n_panels_rm_sig"], NA
        )
    return {
        "n_panels": str(len(p)),
        "n_panels_point_sig": str(int((p["p_corrected"] <= ALPHA).sum())),
        "n_panels_rm_testable": str(int((p["rm_verdict"] != VERDICTS[2]).sum())),
        "n_panels_rm_sig": str(int((p["rm_verdict"] == VERDICTS[0]).sum())),
    }


def _null(res: Any) -> dict[str, str]:
    s = res.null_summary
    rng = s[(s["statistic"] == "range") & (s["null"] == "all words")] if not s.empty else s
    out = {}
    for prefix, corpus in (("bigtwo", _big2(res)), ("mfd", MFD)):
        rows = rng[rng["corpus"] == corpus] if not rng.empty else rng
        out[f"{prefix}_null_p"] = (
            ", ".join(f"{p_clause(r.p_perm)} ({r.framing} prompts)" for r in rows.itertuples()) or NA
        )
        out[f"{prefix}_null_observed"] = (
            ", ".join(f"{number(r.observed, 1)} ({r.framing})" for r in rows.itertuples()) or NA
        )
    out["n_null"] = f"{int(rng['n_null'].iloc[0]):,}" if not rng.empty else NA
    return out


def _robustness(res: Any) -> dict[str, str]:
    out = {"loo_sign_changes": NA, "split_changed": NA}
    if not res.loo.empty:
        keys = ["corpus", "analysis", "subcategory", "term"]
        kept = res.loo.groupby(keys, dropna=False).apply(
            lambda g: bool((np.sign(g["coef"]) == np.sign(g["coef_all"])).all()), include_groups=False
        )
        out["loo_sign_changes"] = f"{int((~kept).sum())} of {len(kept)}"
    if not res.split.empty:
        out["split_changed"] = f"{int(res.split['changes_reading'].sum())} of {len(res.split)}"
    return out


def key_numbers(res: Any) -> dict[str, str]:
    """The numbers the chapter's prose cites, as short texts to glue (every key always present; ``n/a`` where
    the run has no such number), from a :class:`~rmvalues.stages.rm_statistics.Results`."""
    out: dict[str, str] = {}
    for part in (
        _design,
        _three_way,
        _rm_level,
        _attainable,
        _panels,
        _null,
        _robustness,
        robust_numbers.numbers,
        readings.numbers,
    ):
        out |= part(res)
    return out
