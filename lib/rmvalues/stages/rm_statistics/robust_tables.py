"""Reader versions of the robustness sections' tables (at most a screenful each; the full tables are the
downloads): specification-curve labels, lineage, the within-lineage comparison, the lineage adjustment,
power, the crossed intervals, the tokenizers and the small-sample tests of the paper's model."""

from __future__ import annotations

import pandas as pd

from ...core.display import interval, number, pvalue, reader_table
from .tables import readable_term


def _where(df: pd.DataFrame) -> pd.Series:
    """``corpus`` or ``corpus (subcategory)`` per row."""
    sub = df["subcategory"].astype(object)
    return df["corpus"] + sub.map(lambda s: "" if pd.isna(s) or s is None else f" ({s})")


def labels_table(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per verdict: the primary specification's estimate and p, the label and its two shares."""
    df = labels.assign(where=_where(labels))
    out = pd.DataFrame(
        {
            "contrast": df["where"] + ": " + df["statistic"],
            "primary estimate": df["primary_estimate"].map(lambda x: number(x, 1)),
            "primary p (Bonf.)": df["primary_p"].map(pvalue),
            "same sign": df["share_same_sign"].map(lambda x: f"{x:.0%}"),
            "p < 0.05": df["share_significant"].map(lambda x: f"{x:.0%}"),
            "specifications": df["n_specifications"].map(lambda n: f"{int(n):,}"),
            "label": df["label"],
        }
    )
    return out.reset_index(drop=True)


def lineage_table(lineages: pd.DataFrame) -> pd.DataFrame:
    """One row per RM: family, developer, lineage, base checkpoint and preference data."""
    cols = {
        "rm": "reward model",
        "family": "family",
        "developer": "developer",
        "lineage": "lineage",
        "base_model": "fine-tuned from",
        "preference_data": "preference data",
    }
    return reader_table(lineages.fillna("not known"), cols)


def sources_table(sources: pd.DataFrame) -> pd.DataFrame:
    """Every lineage fact with its source and what the source says."""
    return reader_table(
        sources, {"model": "reward model", "fact": "fact", "source": "source", "note": "what it says"}
    )


def within_table(within: pd.DataFrame, analysis: str = "pooled") -> pd.DataFrame:
    """Per verdict and lineage: the RMs of each family, their mean D and the difference."""
    df = within[within["analysis"] == analysis]
    if df.empty:
        return pd.DataFrame(columns=["contrast", "lineage"])
    fa, fb = df["family_a"].iloc[0], df["family_b"].iloc[0]
    return pd.DataFrame(
        {
            "contrast": _where(df) + ": " + df["statistic"],
            "lineage": df["lineage"],
            f"{fa} RMs": df["n_rms_a"],
            f"{fb} RMs": df["n_rms_b"],
            f"mean D, {fa}": df["mean_a"].map(lambda x: number(x, 1)),
            f"mean D, {fb}": df["mean_b"].map(lambda x: number(x, 1)),
            f"{fb} − {fa}": df["difference"].map(lambda x: number(x, 1)),
        }
    ).reset_index(drop=True)


def adjusted_table(adjusted: pd.DataFrame) -> pd.DataFrame:
    """Per verdict: the difference over all RMs and within lineages, the stratified exact p, the OLS family
    coefficient with its interval, and whether the difference survives."""
    df = adjusted
    return pd.DataFrame(
        {
            "contrast": _where(df) + ": " + df["statistic"],
            "all RMs": df["difference"].map(lambda x: number(x, 1)),
            "within lineages": df["stratified_difference"].map(lambda x: number(x, 1)),
            "stratified p (Bonf.)": df["p_stratified_corrected"].map(pvalue),
            "OLS family [95% CI]": [
                f"{number(c, 1)} {interval(lo, hi, 1)}"
                for c, lo, hi in zip(df["ols_coef"], df["ols_ci_low"], df["ols_ci_high"], strict=True)
            ],
            "survives lineage": df["survives_lineage"],
        }
    ).reset_index(drop=True)


def power_reader(power: pd.DataFrame, corpus: str | None = None) -> pd.DataFrame:
    """The power of the central verdict's design per RMs per family, effect size and test."""
    df = power if corpus is None else power[(power["corpus"] == corpus) & (power["analysis"] == "pooled")]
    if df.empty:
        return pd.DataFrame(columns=["RMs per family"])
    wide = df.pivot_table(
        index=["n_a", "n_b"], columns=["effect_fraction", "test"], values="power", aggfunc="first"
    ).sort_index()
    out = pd.DataFrame({"RMs per family": [f"{a} and {b}" for a, b in wide.index]})
    for (frac, test), col in wide.items():
        out[f"{frac:.0%} of the effect, {test}"] = col.map(lambda x: f"{x:.2f}").to_numpy()
    return out


def needed_table(needed: pd.DataFrame) -> pd.DataFrame:
    """Per verdict: the RMs per family a replication needs for 80% power at the observed effect and at half."""
    df = needed.assign(where=_where(needed))
    rows = []
    for (where, stat), g in df.groupby(["where", "statistic"], sort=False):
        cells = {
            f"{frac:.0%} of the effect": "> 200" if pd.isna(v) else str(int(v))
            for frac, v in zip(g["effect_fraction"], g["n_per_family"], strict=True)
        }
        rows.append({"contrast": f"{where}: {stat}", "alpha": f"{g['alpha'].iloc[0]:.3g}", **cells})
    return pd.DataFrame(rows)


def crossed_reader(crossed: pd.DataFrame) -> pd.DataFrame:
    """Per pooled verdict: the estimate and its intervals resampling RMs and words together, RMs only and
    words only."""
    rows = []
    for (corpus, stat), g in crossed.groupby(["corpus", "statistic"], sort=True):
        by = g.set_index("resample")
        row = {"contrast": f"{corpus}: {stat}", "estimate": number(g["estimate"].iloc[0], 1)}
        for name in by.index:
            row[name] = interval(by.loc[name, "ci_low"], by.loc[name, "ci_high"], 1)
        rows.append(row)
    return pd.DataFrame(rows)


def tokenizers_table(tokenizers: pd.DataFrame) -> pd.DataFrame:
    """Per family and corpus: the tokenizer counted in, whether it is the RMs' own, and the single-token
    words."""
    df = tokenizers.drop_duplicates(["family", "source", "corpus"])
    return pd.DataFrame(
        {
            "family": df["family"],
            "scores": df["source"],
            "corpus": df["corpus"],
            "tokenizer": df["tokenizer"],
            "the RMs' own": df["exact"].map({True: "yes", False: "no (stand-in)"}),
            "one-token words": [
                f"{a} of {b}" for a, b in zip(df["n_single_token"], df["n_words"], strict=True)
            ],
        }
    ).reset_index(drop=True)


def small_sample_reader(table: pd.DataFrame) -> pd.DataFrame:
    """The family terms of the paper's model (pooled analyses): the coefficient and SE, statsmodels' z p,
    and the t tests of R's nlme (containment df) and lmerTest (Satterthwaite df)."""
    df = table[table["term"].str.contains("family")]
    return pd.DataFrame(
        {
            "corpus": df["corpus"],
            "term": df["term"].map(readable_term),
            "coef (ranks)": df["coef"].map(lambda x: number(x, 1)),
            "SE": df["se"].map(lambda x: number(x, 1)),
            "p (z)": df["p_z"].map(pvalue),
            "df (nlme)": df["r_df"].map(lambda x: "n/a" if pd.isna(x) else f"{x:.0f}"),
            "p (t, nlme)": df["r_p"].map(pvalue),
            "df (Satterthwaite)": df["satterthwaite_df"].map(lambda x: number(x, 1)),
            "p (t, Satterthwaite)": df["satterthwaite_p"].map(pvalue),
        }
    ).reset_index(drop=True)
