"""The values the audit page's prose pastes (``{glue:text}``): numbers and short phrases, all from the run.

The prose speaks of the first audited RM named on its first statistic (the first corpus' pooled contrast); the
page's tables hold every RM and statistic."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.formats import interval, number, p_clause, percent

__all__ = ["POSITIONS", "key_numbers"]

#: The phrase of a position against a family's reference RMs.
POSITIONS = {
    "below": "below every {family} reference RM",
    "above": "above every {family} reference RM",
    "within": "within the range of the {family} reference RMs",
}


def _where(row: pd.Series) -> str:
    sub = f", {row['subcategory']}" if isinstance(row["subcategory"], str) else ""
    return f"{row['statistic']} on {row['corpus']}{sub}"


def _family(res: Any, first: pd.Series, fam: str, tag: str) -> dict[str, str]:
    placed = res.placed
    row = placed[
        (placed["rm"] == first["rm"])
        & (placed["statistic"] == first["statistic"])
        & (placed["corpus"] == first["corpus"])
        & (placed["analysis"] == first["analysis"])
        & (placed["family"] == fam)
    ].iloc[0]
    loo = res.loo_summary
    lrow = loo[
        (loo["rm"] == first["rm"])
        & (loo["statistic"] == first["statistic"])
        & (loo["corpus"] == first["corpus"])
        & (loo["analysis"] == first["analysis"])
        & (loo["family"] == fam)
    ].iloc[0]
    limits = res.limits.set_index("family").loc[fam]
    changed = int(lrow["n_position_changed"])
    wholly = (row["D_low"] > row["family_max"]) or (row["D_high"] < row["family_min"])
    return {
        f"{tag}": fam,
        f"{tag}_n": str(int(row["n_family"])),
        f"{tag}_range": interval(row["family_min"], row["family_max"], 1),
        f"{tag}_mean": number(row["family_mean"], 1),
        f"{tag}_sd": number(row["family_sd"], 1),
        f"{tag}_percentile": number(row["percentile"], 0),
        f"{tag}_percentile_ci": interval(row["percentile_low"], row["percentile_high"], 0),
        f"{tag}_distance": number(row["distance"], 2),
        f"{tag}_distance_ci": interval(row["distance_low"], row["distance_high"], 2),
        f"{tag}_position": POSITIONS[row["position"]].format(family=fam),
        f"{tag}_interval_position": "lies wholly outside" if wholly else "reaches into",
        f"{tag}_prediction": "inside" if row["inside_prediction"] else "outside",
        f"{tag}_pred_interval": interval(row["pred_low"], row["pred_high"], 1),
        f"{tag}_beyond": percent(float(limits["p_beyond_range"])),
        f"{tag}_pmin": p_clause(float(limits["p_min_two_sided"])),
        f"{tag}_loo": (
            "holds whichever reference RM is left out"
            if changed == 0
            else f"changes when {changed} of its {int(lrow['n_left_out'])} RMs is left out in turn"
        ),
        f"{tag}_loo_min": interval(lrow["min_low"], lrow["min_high"], 1),
        f"{tag}_loo_max": interval(lrow["max_low"], lrow["max_high"], 1),
        f"{tag}_loo_distance": interval(lrow["distance_low"], lrow["distance_high"], 2),
    }


def _tokens(res: Any, rm: str, corpus: str, families: list[str]) -> dict[str, str]:
    tok = res.tokenization[res.tokenization["corpus"] == corpus]
    own = tok[(tok["role"] == "audited") & (tok["rm"] == rm)].iloc[0]
    out = {
        "tok_n_words": str(int(own["n_words"])),
        "tok_one": str(int(own["n_one_token"])),
        "tok_split": str(int(own["n_split"])),
        "tok_share": percent(float(own["share_split"])),
    }
    for tag, fam in zip(("fam_a", "fam_b"), families, strict=False):
        ref = tok[(tok["role"] == "reference") & (tok["family"] == fam)].iloc[0]
        counted = bool(ref["n_words"])
        out[f"{tag}_tok_split"] = str(int(ref["n_split"])) if counted else "none counted (see the note)"
        out[f"{tag}_tok_share"] = percent(float(ref["share_split"])) if counted else "n/a"
    return out


def key_numbers(res: Any) -> dict[str, str]:
    """Every value the page's prose pastes (see the module docstring)."""
    first = res.audited[res.audited["rm"] == res.params.models[0]].iloc[0]  # the first RM named
    families = sorted(res.reference["family"].unique())[:2]
    design = res.design.set_index("corpus").loc[first["corpus"]]
    scoring = res.scoring.set_index("rm").loc[first["rm"]]
    counts = res.reference.drop_duplicates("rm").groupby("family")["rm"].size()
    out = {
        "n_audited": str(len(res.params.models)),
        "audited_names": ", ".join(res.params.models),
        "n_references": str(int(counts.sum())),
        "n_statistics": str(
            res.audited.drop_duplicates(["corpus", "analysis", "subcategory", "statistic"]).shape[0]
        ),
        "corpora": ", ".join(res.params.corpora),
        "n_words": str(int(design["n_words"])),
        "n_prompts": str(int(design["n_prompts"])),
        "n_positive": str(int(design["n_positive"])),
        "n_negative": str(int(design["n_negative"])),
        "n_words_dropped": str(int(design["n_words_dropped"])),
        "n_bootstrap": f"{res.params.n_bootstrap:,}",
        "first_rm": str(first["rm"]),
        "first_rm_family": str(first["family"]),
        "first_where": _where(first),
        "first_D": number(first["D"], 1),
        "first_D_ci": interval(*_d_interval(res, first), 1),
        "first_D_sign": _sign(*_d_interval(res, first)),
        "n_needed": str(int(res.limits["n_needed"].iloc[0])),
        "template": str(scoring["chat_template"]),
        "template_date": str(scoring["template_date"]),
        "readout": str(scoring["score_readout"]),
        "dtype": str(scoring["dtype"]),
        "scoring_run": res.params.scoring_run,
    }
    for tag, fam in zip(("fam_a", "fam_b"), families, strict=False):
        out.update(_family(res, first, fam, tag))
    out["nearer"] = _nearer(res, first, families)
    out.update(_tokens(res, str(first["rm"]), str(first["corpus"]), families))
    return out


def _nearer(res: Any, first: pd.Series, families: list[str]) -> str:
    """The family whose mean is nearer the first audited value in family SDs (``n/a`` when a distance is
    missing)."""
    placed = res.placed
    rows = placed[
        (placed["rm"] == first["rm"])
        & (placed["statistic"] == first["statistic"])
        & (placed["corpus"] == first["corpus"])
        & (placed["analysis"] == first["analysis"])
        & placed["family"].isin(families)
    ]
    dist = rows.set_index("family")["distance"].abs()
    return "n/a" if dist.isna().any() or dist.empty else str(dist.idxmin())


def _sign(low: float, high: float) -> str:
    """Whether the audited RM's interval of ``D`` settles its sign."""
    if low > 0:
        return "above zero: the category gains rank under positive prompts"
    if high < 0:
        return "below zero: the category loses rank under positive prompts"
    return "includes zero, so the sign of the contrast is inconclusive for this RM"


def _d_interval(res: Any, first: pd.Series) -> tuple[float, float]:
    row = res.placed[(res.placed["rm"] == first["rm"]) & (res.placed["statistic"] == first["statistic"])]
    row = row[(row["corpus"] == first["corpus"]) & (row["analysis"] == first["analysis"])].iloc[0]
    return float(row["D_low"]), float(row["D_high"])
