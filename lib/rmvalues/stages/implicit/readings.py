"""The data-chosen parts of the implicit chapter's sentences, as short texts to glue: what each pair's models
differ in, which words survive the single-token filter, the ANOVA terms and post-hoc cells per pair and corpus,
the tail of the token-level rewards, the word contrast, which validation panels pass, whether the sham plant
took. Each is a short phrase or a list of short items joined by ``"; "`` (one per pair, corpus or panel); the
sentences around them are the notebook's Markdown. Every key is always present (a short phrase saying why
where the run has no such value: no model pair, the validation skipped)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.formats import NA, count, interval, number, p_clause, pvalue, signed
from .rewards import pair_label

__all__ = [
    "ALPHA",
    "NO_PAIR",
    "SHAM_TOOK",
    "SKIPPED",
    "TERMS",
    "all_words_readings",
    "anova_readings",
    "anova_verdict",
    "clustered_clause",
    "confounds",
    "contrast_readings",
    "f_clause",
    "readings",
    "sham_readings",
    "survivors",
    "token_readings",
    "validation_readings",
]

#: The significance level of the post-hoc cells and of the clustered verdict.
ALPHA = 0.05
#: The sham model's best AUC on its own words above which the sham plant took.
SHAM_TOOK = 0.75
#: What a key holds where the run has no such value.
NO_PAIR = "no model pair in this run"
NO_ANOVA = "none: an ANOVA needs a pair of models and at least two categories with surviving words"
NO_TOKENS = "none: no token-level rewards in this run"
SKIPPED = "none: the planted-word validation was skipped in this run (planted_model = '')"
CM, CFM = "C(category):C(model)", "C(category):C(framing):C(model)"
#: The ANOVA terms as the prose names them.
TERMS = {
    "C(category)": "category",
    "C(framing)": "framing",
    "C(model)": "model",
    "C(category):C(framing)": "category × framing",
    "C(category):C(model)": "category × model",
    "C(framing):C(model)": "framing × model",
    "C(category):C(framing):C(model)": "category × framing × model",
}


def _join(items: list[str], empty: str = "none") -> str:
    return "; ".join(items) if items else empty


def f_clause(row: pd.Series, resid: float) -> str:
    """``F(df, residual df) = F, p = ...`` of one term of the paper's ANOVA."""
    return f"F({row['df']:.0f}, {resid:.0f}) = {number(row['F'], 2)}, {p_clause(row['p'])}"


def _untestable(row: pd.Series) -> str | None:
    """Why a clustered ANOVA term has no test (one adjective per framing, no variation), or None."""
    if pd.isna(row["F"]) or pd.isna(row["p"]):
        return "one adjective per framing" if row["df_error"] == 0 else "no variation"
    return None


def clustered_clause(row: pd.Series) -> str:
    """``F(df, error df) = F, p`` of a clustered ANOVA term (``n/a`` with one adjective per framing or no
    variation between the adjectives)."""
    if (why := _untestable(row)) is not None:
        return f"n/a ({why})"
    return f"F({row['df']:.0f}, {row['df_error']:.0f}) = {number(row['F'], 2)}, {p_clause(row['p'])}"


def anova_verdict(row: pd.Series | None) -> str:
    """The verdict on the category x framing x model term from its clustered test: the two models differ in
    how framing moves the categories (p < 0.05), else inconclusive (never "no difference")."""
    if row is None or pd.isna(row["p"]):
        return NA
    if row["p"] < ALPHA:
        return (
            "framing moves the categories differently in the two models (clustered p < 0.05, which rests on "
            "the F distribution: the exact split test cannot go that low)"
            if pd.notna(row["p_min"]) and row["p_min"] > ALPHA
            else "framing moves the categories differently in the two models (clustered p < 0.05)"
        )
    return "inconclusive: the clustered test does not establish that framing moves the categories differently"


def confounds(models: pd.DataFrame, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``pair_differences``: per pair (``p vs q``), every attribute of the models table (family, training,
    prompt format, size, quantization, vocabulary size) in which its two models differ."""
    if models.empty or not pairs:
        return {"pair_differences": NO_PAIR}
    info = models.set_index("model")
    attrs = [("family", "family"), ("type", "training"), ("prompt_format", "prompt format"), ("size", "size")]
    attrs += [("quantization", "quantization"), ("vocabulary", "vocabulary size")]
    out = []
    for a, b in pairs:
        diffs = [
            f"{label} ({info.loc[a, col]} vs {info.loc[b, col]})"
            for col, label in attrs
            if col in info and str(info.loc[a, col]) != str(info.loc[b, col])
        ]
        out.append(f"{a} vs {b}: {', '.join(diffs) if diffs else 'nothing the registry records'}")
    return {"pair_differences": _join(out)}


def survivors(counts: pd.DataFrame, words: pd.DataFrame, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The single-token filter per pair and corpus: the words one token under both models of all labelled
    ones (``survivor_totals``) and under each model (``survivor_per_model``); per pair an answer as each model
    scores it (``answer_examples``) and how many words would survive with the other answer form
    (``other_form_survivors``)."""
    keys = ["survivor_totals", "survivor_per_model", "answer_examples", "other_form_survivors"]
    if counts.empty:
        return dict.fromkeys(keys, NO_PAIR)
    names = {pair_label(p, q): (p, q) for p, q in pairs}
    totals, per_model = [], []
    for (pair, corpus), grp in counts.groupby(["pair", "corpus"], sort=False):
        mp, mq = names.get(pair, ("p", "q"))
        totals.append(f"{pair}, {corpus}: {count(grp['n_survive'].sum())} of {count(grp['n_words'].sum())}")
        per_model.append(
            f"{pair}, {corpus}: {count(grp['n_single_p'].sum())} under {mp}, "
            f"{count(grp['n_single_q'].sum())} under {mq}"
        )
    examples, other = [], []
    by_pair = words.drop_duplicates(["pair", "word"]) if len(words) else words
    for (pair, mp, mq), sub in (
        by_pair.groupby(["pair", "model_p", "model_q"], sort=False) if len(words) else []
    ):
        ex = sub.iloc[0]
        examples.append(f"{pair}: {ex['answer_p']!r} for {mp}, {ex['answer_q']!r} for {mq}")
        both = int((sub["other_form_single_p"] & sub["other_form_single_q"]).sum())
        other.append(
            f"{pair}: {count(both)} of {count(len(sub))} words, against {count(sub['survives'].sum())} as scored"
        )
    return {
        "survivor_totals": _join(totals),
        "survivor_per_model": _join(per_model),
        "answer_examples": _join(examples, NA),
        "other_form_survivors": _join(other, NA),
    }


def _clustered_rows(clustered: pd.DataFrame | None, pair: str, corpus: str, metric: str) -> pd.DataFrame:
    if clustered is None or clustered.empty:
        return pd.DataFrame()
    sel = (clustered["pair"] == pair) & (clustered["corpus"] == corpus) & (clustered["metric"] == metric)
    return clustered[sel].set_index("term")


def _term_item(t: pd.DataFrame, c: pd.DataFrame, term: str) -> str:
    """One term of the paper's ANOVA with its clustered counterpart and, for a term with framing, the exact
    split test: ``category × model F(1, 208) = 37.94, p < 0.001 (clustered F(1, 4) = 8.89, p = 0.041)``."""
    text = f"{TERMS[term]} {f_clause(t.loc[term], float(t.loc['Residual', 'df']))}"
    if term not in c.index:
        return text
    row = c.loc[term]
    if (why := _untestable(row)) is not None:
        return f"{text} (clustered: n/a, {why})"
    exact = (
        f", exact test over {int(row['n_splits'])} splits {p_clause(row['p_exact'])}, smallest possible "
        f"{pvalue(row['p_min'])}"
        if pd.notna(row["p_exact"])
        else ""
    )
    return f"{text} (clustered {clustered_clause(row)}{exact})"


def _posthoc_item(posthocs: pd.DataFrame | None, pair: str, corpus: str, metric: str) -> str | None:
    """How many category x framing cells differ after the Benjamini-Hochberg correction, with each such
    cell's difference of the mean ranks (the model named first in the pair, q, minus the reference p) and
    its corrected p."""
    if posthocs is None or posthocs.empty:
        return None
    ph = posthocs[
        (posthocs["pair"] == pair) & (posthocs["corpus"] == corpus) & (posthocs["metric"] == metric)
    ]
    if ph.empty:
        return None
    sig = ph[ph["p_corrected"] < ALPHA]
    cells = "".join(
        f", {r.category}/{r.framing} {signed(r.difference, 1)} ({p_clause(r.p_corrected)})"
        for r in sig.itertuples()
    )
    return f"{pair}, {corpus}: {len(sig)} of {len(ph)} cells{cells}"


def anova_readings(
    anova: pd.DataFrame, posthocs: pd.DataFrame | None = None, clustered: pd.DataFrame | None = None
) -> dict[str, str]:
    """The single-token ANOVA per pair and corpus: its points and clusters (``single_anova_design``), the
    category x model and category x framing x model terms as the paper and clustered
    (``single_anova_terms``), and the post-hoc cells where the two models differ (``single_posthocs``)."""
    out = {"posthoc_threshold": f"p < {ALPHA:g}"}
    if anova.empty:
        return {
            **out,
            **dict.fromkeys(["single_anova_design", "single_anova_terms", "single_posthocs"], NO_ANOVA),
        }
    design, terms, cells = [], [], []
    for (pair, corpus, metric), grp in anova.groupby(["pair", "corpus", "metric"], sort=False):
        t, c = grp.set_index("term"), _clustered_rows(clustered, pair, corpus, metric)
        per_cell = f" (clustered: {int(c['n_clusters'].iloc[0])} adjective means per cell)" if len(c) else ""
        design.append(f"{pair}, {corpus}: {count(grp['n_points'].iloc[0])} points{per_cell}")
        terms += [f"{pair}, {corpus}: {_term_item(t, c, k)}" for k in (CM, CFM) if k in t.index]
        if (item := _posthoc_item(posthocs, pair, corpus, metric)) is not None:
            cells.append(item)
    return {
        **out,
        "single_anova_design": _join(design),
        "single_anova_terms": _join(terms),
        "single_posthocs": _join(cells, "no post-hoc tests in this run"),
    }


def all_words_readings(anova: pd.DataFrame) -> dict[str, str]:
    """``all_words_terms``: the category x model term of the all-words ANOVA per pair and corpus, on the
    summed log-probabilities and on the token-count-adjusted ones."""
    if anova.empty:
        return {"all_words_terms": "none: the all-words ANOVA needs a pair of models"}
    out = []
    for (pair, corpus), grp in anova.groupby(["pair", "corpus"], sort=False):
        bits = []
        for metric, label in (("word_sum", "summed"), ("word_sum_adjusted", "token-count adjusted")):
            t = grp[grp["metric"] == metric].set_index("term")
            if CM in t.index:
                bits.append(f"{label} {f_clause(t.loc[CM], float(t.loc['Residual', 'df']))}")
        out.append(f"{pair}, {corpus}: {', '.join(bits) if bits else NA}")
    return {"all_words_terms": _join(out)}


def token_readings(top: pd.DataFrame, tokens: pd.DataFrame, k: int) -> dict[str, str]:
    """Per pair, how many of the top tokens by token-level MWLR (all tokens, all prompts) are words, letters
    only and at least three (``top_token_words``), and the median mean probability ((p + q) / 2) of the ``k``
    tokens with the highest raw log ratio and of those with the highest MWLR (``tail_probabilities``)."""
    out = dict.fromkeys(["top_token_words", "tail_probabilities"], NO_TOKENS)
    if len(top):
        sel = top[(top["filter"] == "all tokens") & (top["framing"] == "all") & (top["end"] == "top")]
        out["top_token_words"] = _join(
            [
                f"{pair}: {int(grp['token'].str.fullmatch(r' ?[A-Za-z]{3,}').sum())} of {len(grp)}"
                for pair, grp in sel.groupby("pair", sort=False)
            ],
            NO_TOKENS,
        )
    if len(tokens):
        items = []
        for pair, grp in tokens[tokens["framing"] == "all"].groupby("pair", sort=False):
            mix = (grp["p"] + grp["q"]) / 2
            by_lr = mix[grp["logratio"].nlargest(k).index].median()
            by_mw = mix[grp["mwlr"].nlargest(k).index].median()
            items.append(
                f"{pair}: {by_lr:.1e} by raw log ratio, {by_mw:.1e} by MWLR ({by_mw / by_lr:.0e} times higher)"
                if by_lr > 0
                else f"{pair}: probability 0 by raw log ratio, {by_mw:.1e} by MWLR"
            )
        out["tail_probabilities"] = _join(items, NO_TOKENS)
    return out


def contrast_readings(contrasts: pd.DataFrame) -> dict[str, str]:
    """``contrast_wins_by_pair``: per pair, in how many spelling variants the contrast's first word gets the
    higher mean MWLR than the second (over all prompts)."""
    if contrasts.empty:
        return {"contrast_wins_by_pair": NO_PAIR}
    df = contrasts[contrasts["framing"] == "all"]
    return {
        "contrast_wins_by_pair": _join(
            [
                f"{pair}: {int((g['difference'] > 0).sum())} of {len(g)}"
                for pair, g in df.groupby("pair", sort=False)
            ]
        )
    }


def _panel(r: Any) -> str:
    """A validation panel's level, with its reference for the cross-tokenizer variant."""
    return f"{r.level} against {r.reference}" if r.level.startswith("word (") else r.level


def validation_readings(validation: pd.DataFrame, metric_contrasts: pd.DataFrame) -> dict[str, str]:
    """The metrics that pass and fail the planted-word criterion, per panel (``validation_passing``,
    ``validation_failing``), and MWLR minus the raw log ratio on the tuned model per panel, with its paired
    bootstrap interval (``mwlr_minus_raw``)."""
    if validation.empty:
        return {"validation_passing": SKIPPED, "validation_failing": NA, "mwlr_minus_raw": NA}
    out = {}
    for key, passes in (("validation_passing", True), ("validation_failing", False)):
        v = validation[validation["passes"].astype(bool) == passes]
        by_panel: dict[str, list[str]] = {}
        for r in v.itertuples():
            by_panel.setdefault(_panel(r), []).append(r.metric)
        out[key] = _join([f"{panel}: {', '.join(m)}" for panel, m in by_panel.items()])
    out["mwlr_minus_raw"] = _join(
        [
            f"{_panel(r)} {signed(r.difference, 3)} {interval(r.ci_low, r.ci_high, 3)} ({r.metric_a} AUC "
            f"{number(r.auc_a, 3)}, {r.metric_b} {number(r.auc_b, 3)})"
            for r in metric_contrasts.itertuples()
        ],
        NA,
    )
    return out


def sham_readings(
    recovery: pd.DataFrame, words: pd.DataFrame, losses: list[float], sham: list[float]
) -> dict[str, str]:
    """The sham control: its words (``n_sham``) and their largest Zipf distance from the planted words
    (``sham_zipf_max``), the training losses from the first step to the last (``planted_loss``,
    ``sham_loss``), and the sham model's recovery of its own words with whether the sham plant took
    (``sham_own_words``)."""
    out = dict.fromkeys(["n_sham", "sham_zipf_max", "planted_loss", "sham_loss", "sham_own_words"], NA)
    if recovery.empty or words.empty:
        return out
    sh = words[words["role"] == "sham"]
    out["n_sham"] = count(len(sh))
    out["sham_zipf_max"] = number(float(np.abs(sh["zipf_difference"]).max()), 2) if len(sh) else NA
    if losses and sham:
        out["planted_loss"] = f"{number(losses[0], 2)} \u2192 {number(losses[-1], 2)}"
        out["sham_loss"] = f"{number(sham[0], 2)} \u2192 {number(sham[-1], 2)}"
    own = recovery[(recovery["target"] == "sham words") & (recovery["level"] == "word")]
    if len(own):
        best = own.sort_values("auc", ascending=False).iloc[0]
        auc = number(best["auc"], 3)
        out["sham_own_words"] = (
            f"AUC up to {auc} ({best['metric']}), above {SHAM_TOOK:g}: the sham plant took"
            if best["auc"] > SHAM_TOOK
            else f"AUC at most {auc} ({best['metric']}), not above {SHAM_TOOK:g}: this run does not show that "
            "the sham plant took"
        )
    return out


def readings(results: Any) -> dict[str, str]:
    """Every data-chosen phrase and list of the chapter's Markdown, for a run's results."""
    return {
        **confounds(results.models, results.pairs),
        **survivors(results.single_counts, results.single_words, results.pairs),
        **anova_readings(results.single_anova, results.single_posthocs, results.single_anova_clustered),
        **all_words_readings(results.anova),
        **token_readings(results.top_tokens, results.token_rewards, int(results.params.top_k)),
        **contrast_readings(results.contrasts),
        **validation_readings(results.validation, results.metric_contrasts),
        **sham_readings(results.recovery, results.planted_words, results.planted_losses, results.sham_losses),
    }
