"""The data-chosen parts of the statistics chapter's sentences, as short texts to glue: which coding was
fitted, who built the RMs, how the paper's conclusion reads at the RM level, where the virtue/vice split
changes a reading. The sentences around them are the notebook's Markdown; every key is always present
(``n/a`` where the run has no such value)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from ...core.formats import NA, ci, count, number, p_clause
from .analysis import ALPHA, NO_READING, VERDICTS

#: The Moral Foundations corpus the ``mfd_*`` keys describe.
MFD = "mfd2"


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["analysis"] == "pooled"] if "analysis" in df.columns else df


def _big2(res: Any) -> str | None:
    return next((c for c in res.params.corpora if c.startswith("big2")), None)


def _developer(model: str) -> str:
    return model.split("/")[0] if "/" in model else "(local)"


def _size(model: str) -> str | None:
    m = re.search(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model)
    return f"{m.group(1)}B" if m else None


def _join(items: list[str], empty: str = "none") -> str:
    return "; ".join(items) if items else empty


def unlabelled(words: dict[str, list[str]]) -> dict[str, str]:
    """The scored words without a label in their corpus (dropped from the analysis), per corpus."""
    parts = [f"{c}: {len(w)} ({', '.join(sorted(w))})" for c, w in words.items() if w]
    return {"unlabelled": _join(parts)}


def confounds(scores: pd.DataFrame, families: list[str]) -> dict[str, str]:
    """What the ids show the family comparison is confounded by: developers per family and sizes where
    the id states one (``confound_families``), and whether any developer released RMs of both families
    (``developer_crossing``)."""
    rms = scores.drop_duplicates("model")[["model", "family"]]
    rms = rms[rms["family"].isin(families)]
    parts, devs = [], {}
    for fam in families:
        models = sorted(rms.loc[rms["family"] == fam, "model"])
        devs[fam] = sorted({_developer(m) for m in models})
        sizes = pd.Series([_size(m) for m in models], dtype=object).dropna().value_counts()
        size_text = ", ".join(f"{k} \u00d7{v}" for k, v in sizes.items()) or "not stated in the ids"
        parts.append(
            f"{len(models)} {fam} RMs from {len(devs[fam])} developer(s) ({', '.join(devs[fam])}; sizes "
            f"{size_text})"
        )
    shared = sorted(set(devs.get(families[0], [])) & set(devs.get(families[1], [])))
    crossing = (
        f"{len(shared)} developer(s) ({', '.join(shared)}) released RMs of both families, so developer is "
        "only partly crossed with family"
        if shared
        else "no developer released RMs of both families, so developer and family cannot be told apart"
    )
    return {"confound_families": _join(parts), "developer_crossing": crossing}


def coding(coding_df: pd.DataFrame, three_way: pd.DataFrame, framing_reference: str) -> dict[str, str]:
    """The reference levels as fitted (``coding_reference``), where the framing's comes from
    (``framing_reference_source``), and what the three-way terms would read under the other framing
    (``coding_other_framing``, ``coding_flips``)."""
    out = dict.fromkeys(["coding_reference", "coding_flips"], NA)
    pooled = _pooled(coding_df)
    ref = {f: grp.drop_duplicates("corpus") for f, grp in pooled.groupby("factor")}
    parts = []
    if "family" in ref:
        parts.append(f"family {ref['family']['reference'].iloc[0]}")
    if "category" in ref:
        parts.append(
            "category (" + "; ".join(f"{r.corpus}: {r.reference}" for r in ref["category"].itertuples()) + ")"
        )
    if "framing" in ref:
        parts.append(f"framing {ref['framing']['reference'].iloc[0]}")
    if parts:
        out["coding_reference"] = ", ".join(parts)
    out["framing_reference_source"] = (
        "as the paper's script sets it"
        if framing_reference == "positive"
        else "R's alphabetical default, which the parameter framing_reference chose over the paper's script"
    )
    out["coding_other_framing"] = "negative" if framing_reference == "positive" else "positive"
    flips = [
        f"{r.corpus} {number(r.coef)} would read {number(-r.coef)}" for r in _pooled(three_way).itertuples()
    ]
    if flips:
        out["coding_flips"] = "; ".join(flips)
    return out


def _model_row(models: pd.DataFrame, r: Any, prefix: str) -> pd.Series | None:
    m = models[
        (models["corpus"] == r.corpus)
        & (models["analysis"] == r.analysis)
        & (
            models["subcategory"].astype(object).fillna("")
            == ("" if pd.isna(r.subcategory) else r.subcategory)
        )
        & (models["statistic"] == r.statistic)
        & models["method"].str.startswith(prefix)
    ]
    return None if m.empty else m.iloc[0]


def _overlap(contrasts: pd.DataFrame, r: Any) -> str:
    """How many RMs of family b have a D within the range of family a's RMs."""
    c = contrasts[
        (contrasts["corpus"] == r.corpus)
        & (contrasts["analysis"] == r.analysis)
        & (contrasts["statistic"] == r.statistic)
    ]
    a = c.loc[c["family"] == r.family_a, "D"]
    b = c.loc[c["family"] == r.family_b, "D"]
    if a.size < 2 or b.empty:
        return NA
    inside = int(((b >= a.min()) & (b <= a.max())).sum())
    return (
        f"{inside} of the {b.size} {r.family_b} RMs have a D within the range of the {a.size} {r.family_a} "
        f"RMs ({number(a.min(), 1)} to {number(a.max(), 1)})"
    )


def rm_reading(r: Any) -> str:
    """What the primary specification's exact RM-level test says about one contrast."""
    if r.verdict == VERDICTS[0]:
        return f"holds at the RM level: exact {p_clause(r.p_corrected)}, {ci(r.ci_low, r.ci_high, 1)}"
    if r.verdict == VERDICTS[1]:
        return (
            f"is not established at the RM level by the {r.n_rms_a + r.n_rms_b} RMs: exact "
            f"{p_clause(r.p_corrected)}, and the {ci(r.ci_low, r.ci_high, 1)} includes zero, so the "
            "reading is inconclusive"
        )
    return (
        f"cannot be tested at this n (with {r.n_rms_a} and {r.n_rms_b} RMs the smallest attainable p after "
        f"Bonferroni over {r.n_tests} is {number(r.p_min_corrected, 3)})"
    )


def conclusion(res: Any) -> dict[str, str]:
    """How the paper's conclusion reads at the RM level: for the Big Two, which family's RMs move the
    category more between the framings, the paper's model's p, the primary specification's reading and the
    overlap of the families' D; for the Moral Foundations, how many contrasts the paper's model and the
    RM-level tests call significant."""
    keys = ["bigtwo_move", "bigtwo_paper_p", "bigtwo_rm_reading", "bigtwo_overlap", "mfd_paper_n_sig"]
    keys += ["mfd_rm_n_inconclusive"]
    out = dict.fromkeys(keys, NA)
    out["bigtwo_corpus"] = _big2(res) or NA
    rm = _pooled(res.rm_level)
    rows = rm[rm["corpus"] == _big2(res)]
    if not rows.empty:
        rt = next(rows.itertuples())
        more = rt.family_a if rt.difference < 0 else rt.family_b
        out["bigtwo_move"] = (
            f"the move of {rt.category} relative to {rt.versus} from negative to positive prompts is larger in "
            f"the {more} RMs (mean D {number(rt.mean_a, 1)} for {rt.family_a}, {number(rt.mean_b, 1)} for "
            f"{rt.family_b})"
        )
        paper = _model_row(res.models, rt, "random intercept")
        out["bigtwo_paper_p"] = p_clause(paper["p"]) if paper is not None else NA
        out["bigtwo_rm_reading"] = rm_reading(rt)
        out["bigtwo_overlap"] = _overlap(res.contrasts, rt)
    mfd = rm[rm["corpus"] == MFD]
    if not mfd.empty:
        paper_sig = sum(
            1
            for rt in mfd.itertuples()
            if (m := _model_row(res.models, rt, "random intercept")) is not None and m["p"] <= ALPHA
        )
        out["mfd_paper_n_sig"] = f"{paper_sig} of {len(mfd)}"
        out["mfd_rm_n_inconclusive"] = str(int((mfd["verdict"] == VERDICTS[1]).sum()))
    return out


def bootstrap_vs_exact(panels: pd.DataFrame) -> dict[str, str]:
    """How often the interval over RMs then prompts excludes zero while the exact RM-level test, even
    uncorrected, does not reject: the bootstrap of few RMs runs narrow."""
    out = dict.fromkeys(["boot_n_panels", "boot_n_excluding", "boot_n_loose", "boot_rms"], NA)
    ok = _pooled(panels).dropna(subset=["diff_hb_ci_low", "diff_hb_ci_high", "p_perm_rm"])
    if ok.empty:
        return out
    excl = ok[(ok["diff_hb_ci_low"] > 0) | (ok["diff_hb_ci_high"] < 0)]
    return {
        "boot_n_panels": count(len(ok)),
        "boot_n_excluding": count(len(excl)),
        "boot_n_loose": count((excl["p_perm_rm"] > ALPHA).sum()),
        "boot_rms": f"{int(ok['n_rms_a'].min())} and {int(ok['n_rms_b'].min())}",
    }


def split(res: Any) -> dict[str, str]:
    """Which corpora were split into virtue and vice words, and where the split changes a panel's reading
    (on the intervals over RMs then prompts, and on intervals over points for comparison)."""
    out = {"split_corpora": ", ".join(res.split_corpora) or "none"}
    out |= dict.fromkeys(
        ["split_changed_list", "split_unclear", "split_unreadable", "split_points_changed"], NA
    )
    s = res.split
    if s.empty:
        return out
    changed = s[s["changes_reading"]]
    out["split_changed_list"] = _join(
        [f"{r.category} {r.framing} ({r.changed_in})" for r in changed.itertuples()]
    )
    out["split_unclear"] = count((s["reading_pooled"] == "unclear").sum())
    out["split_unreadable"] = count((s.filter(like="reading_") == NO_READING).any(axis=1).sum())
    if not res.split_points.empty:
        out["split_points_changed"] = f"{int(res.split_points['changes_reading'].sum())} of {len(s)}"
    return out


def covariates(res: Any) -> dict[str, str]:
    """Per corpus, how many words have a valence norm and enter the word-level model; or why the model was
    not fitted."""
    cov = res.covariates
    if cov is None:
        return {"covariate_words": f"none ({res.covariate_note.strip().rstrip('.')})"}
    rows = cov[cov["covariates"] == "with"].drop_duplicates("corpus")
    return {
        "covariate_words": _join(
            [f"{r.corpus}: {int(r.n_words)} of {int(r.n_words_corpus)} words" for r in rows.itertuples()]
        )
    }


def numbers(res: Any) -> dict[str, str]:
    """Every data-chosen phrase of the chapter's prose (see the module's docstring)."""
    out = unlabelled(res.unlabelled_words)
    out |= confounds(res.scores, res.families)
    out |= coding(res.coding, res.three_way, res.params.framing_reference)
    out |= conclusion(res)
    out |= bootstrap_vs_exact(res.panels)
    out |= split(res)
    out |= covariates(res)
    out["loo_skipped"] = ", ".join(res.loo_skipped) or "none"
    return out
