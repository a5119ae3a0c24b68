"""Reader tables of the implicit-rewards chapter: the run's tables cut to what a reader compares, with readable
column names, rounded numbers and p-values as the book writes them (the full tables are the CSV downloads)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ...core.display import interval, number, pvalue, reader_table
from ...stats import contrast_reader_table
from .findings import BIG2, CATEGORY

__all__ = [
    "BIG2_CATEGORY",
    "MODEL_TERMS",
    "anova_table",
    "contrast_table",
    "detection_table",
    "difference_table",
    "framing_contrast_table",
    "metric_contrast_table",
    "planted_rank_table",
    "sham_table",
    "top_tokens_table",
    "validation_table",
]

#: The ANOVA terms that involve the model (the question of the chapter: do the two models differ?).
MODEL_TERMS = {
    "C(model)": "model",
    "C(category):C(model)": "category × model",
    "C(framing):C(model)": "framing × model",
    "C(category):C(framing):C(model)": "category × framing × model",
}


#: The category whose framing contrast the chapter shows for each Big Two corpus (the other is its mirror).
BIG2_CATEGORY = dict.fromkeys(BIG2, CATEGORY)

#: The columns :func:`anova_table` adds for the clustered counterpart (source name -> shown name).
CLUSTERED_SHOWN = {
    "F_clustered": "F (adjectives)",
    "df_clustered": "df (adjectives)",
    "p_clustered": "p (adjectives)",
    "exact": "exact p (smallest)",
}


def _clustered_terms(clustered: pd.DataFrame) -> pd.DataFrame:
    """The model terms of the clustered ANOVA with their df pair and the exact p (its smallest value)."""
    c = clustered[clustered["term"].isin(list(MODEL_TERMS))].copy()
    c["df_clustered"] = [f"{r.df:.0f}, {r.df_error:.0f}" for r in c.itertuples()]
    c["exact"] = [
        f"{pvalue(r.p_exact)} ({pvalue(r.p_min)})" if pd.notna(r.p_exact) else "" for r in c.itertuples()
    ]
    c = c.rename(columns={"F": "F_clustered", "p": "p_clustered"})
    return c[["pair", "corpus", "metric", "term", *CLUSTERED_SHOWN]]


def anova_table(
    anova: pd.DataFrame, metrics: dict[str, str] | None = None, clustered: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The model terms of the per-pair ANOVAs (one row per pair, corpus, metric and term) with the residual
    degrees of freedom; ``metrics`` (name -> shown name) selects and renames the metrics. ``clustered``
    (:func:`~rmvalues.stages.implicit.ranking.pair_anova_clustered`): beside the paper's F, df and p, those
    of its counterpart clustered by adjective (df: the term's and its error stratum's) and the exact
    permutation p over the splits of the adjectives with, in brackets, the smallest it can give."""
    with_clustered = clustered is not None and not clustered.empty
    if anova.empty:
        extra = list(CLUSTERED_SHOWN.values()) if with_clustered else []
        return pd.DataFrame(columns=["pair", "corpus", "term", "F", "df", "p", *extra])
    df = anova if metrics is None else anova[anova["metric"].isin(list(metrics))]
    resid = df[df["term"] == "Residual"].set_index(["pair", "corpus", "metric"])["df"]
    rows = df[df["term"].isin(list(MODEL_TERMS))].copy()
    rows["df"] = [
        f"{r.df:.0f}, {resid.get((r.pair, r.corpus, r.metric), float('nan')):.0f}" for r in rows.itertuples()
    ]
    if with_clustered:
        rows = rows.merge(_clustered_terms(clustered), on=["pair", "corpus", "metric", "term"], how="left")
    rows["term"] = rows["term"].map(MODEL_TERMS)
    if metrics is not None:
        rows["metric"] = rows["metric"].map(metrics)
    cols = {"pair": "pair", "corpus": "corpus", **({"metric": "scores"} if metrics else {})}
    cols |= {"term": "term", "F": "F", "df": "df", "p": "p"}
    cols |= CLUSTERED_SHOWN if with_clustered else {}
    return reader_table(rows, cols, pvalues=["p", "p_clustered"])


def framing_contrast_table(
    contrasts: pd.DataFrame, categories: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The framing contrasts ``D`` of each model of a pair and their difference, for readers (:func:`rmvalues.stats.contrast_reader_table`)."""
    return contrast_reader_table(contrasts, categories, pair=True)


def top_tokens_table(top: pd.DataFrame, which: str = "words only") -> pd.DataFrame:
    """The tokens at the top and the bottom of each pair's token-level MWLR over all prompts, one row per
    position (``which``: ``words only`` or ``all tokens``)."""
    if top.empty:
        return pd.DataFrame(columns=["position"])
    shown = top[(top["filter"] == which) & (top["framing"] == "all")]
    wide = shown.pivot_table(index="position", columns=["pair", "end"], values="token", aggfunc="first")
    wide = wide.reindex(columns=sorted(wide.columns, key=lambda c: (c[0], c[1] != "top")))
    wide.columns = [f"{end} ({pair})" if shown["pair"].nunique() > 1 else end for pair, end in wide.columns]
    return wide.map(repr).reset_index()


def contrast_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """The word-pair contrast per pair and variant, over all prompts: both words' mean MWLR, the difference
    and the share of prompts in which the first word wins."""
    if contrasts.empty:
        return pd.DataFrame(columns=["pair"])
    df = contrasts[contrasts["framing"] == "all"].copy()
    for col in ("mwlr_a", "mwlr_b", "difference"):
        df[col] = df[col].map(lambda x: f"{x:.2e}".replace("-", "\u2212"))
    df["share_a_wins"] = df["share_a_wins"].map(lambda x: f"{x:.0%}")
    a, b = df["text_a"].iloc[0].strip(), df["text_b"].iloc[0].strip()
    cols = {"pair": "pair", "case": "case", "space": "space", "mwlr_a": f"MWLR {a}", "mwlr_b": f"MWLR {b}"}
    cols |= {"difference": "difference", "share_a_wins": f"prompts where {a} wins", "n_prompts": "prompts"}
    return reader_table(df, cols)


def sham_table(words: pd.DataFrame) -> pd.DataFrame:
    """Each planted word with its frequency-matched sham word: Zipf frequencies, their difference and the
    sham word's category."""
    if words.empty:
        return pd.DataFrame(columns=["planted word"])
    planted = words[words["role"] == "planted"].set_index("word")["zipf_frequency"]
    sham = words[words["role"] == "sham"].copy()
    sham["zipf_planted"] = sham["matched_to"].map(planted)
    cols = {
        "matched_to": "planted word",
        "zipf_planted": "Zipf (planted)",
        "word": "sham word",
        "zipf_frequency": "Zipf (sham)",
        "zipf_difference": "difference",
        "category": "sham word's category",
    }
    return reader_table(sham, cols)


def validation_table(validation: pd.DataFrame) -> pd.DataFrame:
    """The pass criterion per panel: the planted words' AUC in the three conditions, the differences from the
    two controls with their 95% bootstrap intervals, and the verdict."""
    if validation.empty:
        return pd.DataFrame(columns=["level"])
    df = validation.copy()
    for ctrl in ("untuned", "sham"):
        df[f"vs_{ctrl}"] = [
            f"{number(d, 3)} {interval(lo, hi, 3)}"
            for d, lo, hi in zip(df[f"diff_{ctrl}"], df[f"ci_low_{ctrl}"], df[f"ci_high_{ctrl}"], strict=True)
        ]
    df["verdict"] = df["passes"].map({True: "passes", False: "fails"})
    cols = {"level": "level", "reference": "reference", "metric": "metric", "auc_planted": "AUC tuned"}
    cols |= {"auc_untuned": "AUC untuned", "auc_sham": "AUC sham", "vs_untuned": "tuned − untuned [95% CI]"}
    cols |= {"vs_sham": "tuned − sham [95% CI]", "verdict": "verdict"}
    return reader_table(df, cols, digits=3)


def metric_contrast_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """MWLR against the raw log ratio on the tuned model: both AUCs and the difference with its interval."""
    if contrasts.empty:
        return pd.DataFrame(columns=["level"])
    df = contrasts.copy()
    df["diff"] = [
        f"{number(d, 3)} {interval(lo, hi, 3)}"
        for d, lo, hi in zip(df["difference"], df["ci_low"], df["ci_high"], strict=True)
    ]
    cols = {"level": "level", "reference": "reference", "metric_a": "metric a", "auc_a": "AUC a"}
    cols |= {"metric_b": "metric b", "auc_b": "AUC b", "diff": "a − b [95% CI]"}
    return reader_table(df, cols, digits=3)


def planted_rank_table(ranks: pd.DataFrame, condition: str = "planted") -> pd.DataFrame:
    """The rank of each planted word among the candidates under ``condition``, one column per level and
    metric (``level: metric``)."""
    if ranks.empty:
        return pd.DataFrame(columns=["word"])
    df = ranks[ranks["condition"] == condition].assign(panel=lambda d: d["level"] + ": " + d["metric"])
    wide = df.pivot_table(index="word", columns="panel", values="rank", sort=False)
    return wide.round(0).astype("Int64").reset_index().rename_axis(columns=None)


def detection_table(graded: pd.DataFrame) -> pd.DataFrame:
    """The graded validation, one row per level and metric, one column per strength: the planted words' AUC
    under the plant minus under the sham plant of the same strength, its 95% interval, and ``✓`` where the plant
    is detected (the intervals above both controls exclude zero); the last column the weakest strength
    detected."""
    if graded.empty:
        return pd.DataFrame(columns=["level", "metric"])
    df = graded.copy()
    df["cell"] = [
        f"{number(e, 2)} {interval(lo, hi, 2)}" + (" ✓" if ok else "")
        for e, lo, hi, ok in zip(
            df["excess"], df["ci_low_excess"], df["ci_high_excess"], df["detected"], strict=True
        )
    ]
    df["column"] = [f"lr {s:g}" for s in df["strength"]]
    order = [f"lr {s:g}" for s in sorted(df["strength"].unique())]
    wide = df.pivot_table(
        index=["level", "metric"], columns="column", values="cell", aggfunc="first", sort=False
    )
    wide = wide[order].reset_index().rename_axis(columns=None)
    weakest = {
        (lv, m): grp.loc[grp["detected"], "strength"].min()
        for (lv, m), grp in df.groupby(["level", "metric"])
    }
    wide["weakest detected"] = [
        f"lr {weakest[(lv, m)]:g}" if pd.notna(weakest[(lv, m)]) else "none"
        for lv, m in zip(wide["level"], wide["metric"], strict=True)
    ]
    return wide


def difference_table(differences: pd.DataFrame) -> pd.DataFrame:
    """The metrics compared at every strength: metric a's excess AUC over the sham minus metric b's, with the
    95% interval over the shared bootstrap draws and whether it separates them."""
    if differences.empty:
        return pd.DataFrame(columns=["level"])
    df = differences.copy()
    df["diff"] = [
        f"{number(d, 3)} {interval(lo, hi, 3)}"
        for d, lo, hi in zip(df["difference"], df["ci_low"], df["ci_high"], strict=True)
    ]
    df["verdict"] = [
        (f"{a} ahead" if lo > 0 else f"{b} ahead") if sep else "inconclusive"
        for a, b, lo, sep in zip(df["metric_a"], df["metric_b"], df["ci_low"], df["separated"], strict=True)
    ]
    cols = {"level": "level", "strength": "learning rate", "metric_a": "metric a", "metric_b": "metric b"}
    cols |= {"excess_a": "excess a", "excess_b": "excess b", "diff": "a − b [95% CI]", "verdict": "verdict"}
    return reader_table(df, cols, digits=3)
