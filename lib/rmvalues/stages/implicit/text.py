"""Sentences of the implicit-rewards chapter, built from the numbers of the run (no sentence states a result
the run did not compute)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.display import number, p_clause, pvalue
from .findings import BIG2, CATEGORY
from .plant_finetune import ZIPF_TOLERANCE

__all__ = [
    "describe_all_words_anova",
    "describe_anova",
    "describe_confounds",
    "describe_contrasts",
    "describe_metric_contrasts",
    "describe_recovery",
    "describe_sham",
    "describe_survivors",
    "describe_tail",
    "describe_token_counts",
    "describe_top_tokens",
    "describe_validation",
    "anova_verdict",
    "key_numbers",
    "MARKDOWN_KEYS",
    "summary",
]

#: The keys of :func:`key_numbers` that hold MyST Markdown (pasted with ``{glue:md}``): the findings' answers.
MARKDOWN_KEYS = ("pair_answer", "planted_answer")

_TERMS = {
    "C(category)": "category",
    "C(framing)": "framing",
    "C(model)": "model",
    "C(category):C(framing)": "category x framing",
    "C(category):C(model)": "category x model",
    "C(framing):C(model)": "framing x model",
    "C(category):C(framing):C(model)": "category x framing x model",
}


def _f(row: pd.Series, resid: float) -> str:
    return f"F({row['df']:.0f}, {resid:.0f}) = {row['F']:.2f}, {p_clause(row['p'])}"


def describe_confounds(models: pd.DataFrame, pairs: list[tuple[str, str]]) -> str:
    """What each pair's comparison is confounded with: every attribute (family, training, prompt format,
    size, quantization, vocabulary size) in which its two models differ, read from the models table."""
    if models.empty or not pairs:
        return "No model pair."
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
        what = ", ".join(diffs) if diffs else "nothing the registry records"
        out.append(f"{a} vs {b} differ in {what}, so a difference between them is not a family effect alone")
    return "; ".join(out) + "."


def describe_survivors(counts: pd.DataFrame, words: pd.DataFrame) -> str:
    """How many words survive the single-token filter, per pair, corpus and category, and how many would
    with the other answer form."""
    if counts.empty:
        return "No model pair: no single-token filter."
    out = []
    names = words.drop_duplicates("pair").set_index("pair")[["model_p", "model_q"]] if len(words) else None
    for (pair, corpus), grp in counts.groupby(["pair", "corpus"], sort=False):
        per = ", ".join(f"{r.category} {r.n_survive} of {r.n_words}" for r in grp.itertuples())
        mp, mq = names.loc[pair] if names is not None and pair in names.index else ("p", "q")
        out.append(
            f"**{pair}**, {corpus}: {int(grp['n_survive'].sum())} of {int(grp['n_words'].sum())} labelled words "
            f"are one token under both models ({per}); {int(grp['n_single_p'].sum())} are one token under "
            f"{mp}, {int(grp['n_single_q'].sum())} under {mq}."
        )
    for (_pair, mp, mq), sub in words.drop_duplicates(["pair", "word"]).groupby(
        ["pair", "model_p", "model_q"], sort=False
    ):
        ex = sub.iloc[0]
        other = int((sub["other_form_single_p"] & sub["other_form_single_q"]).sum())
        out.append(
            f"Answers are matched as each model scores them (e.g. {ex['answer_p']!r} for {mp}, "
            f"{ex['answer_q']!r} for {mq}); with the other form for both (a leading space added in the chat "
            f"format, removed in the raw one), {other} of these {len(sub)} words would be single tokens in both "
            f"vocabularies, against {int(sub['survives'].sum())} as scored."
        )
    return " ".join(out)


def _fc(row: pd.Series) -> str:
    """``F(df, error df) = F, p`` of a clustered ANOVA term (``n/a`` with one adjective per framing or no
    variation between the adjectives)."""
    if pd.isna(row["F"]) or pd.isna(row["p"]):
        return "n/a (one adjective per framing)" if row["df_error"] == 0 else "n/a (no variation)"
    return f"F({row['df']:.0f}, {row['df_error']:.0f}) = {row['F']:.2f}, {p_clause(row['p'])}"


def _clustered_text(clustered: pd.DataFrame | None, pair: str, corpus: str, metric: str) -> str:
    """The model terms of the clustered ANOVA of one pair, corpus and metric, with the exact p of the
    category x framing x model term (``''`` without it)."""
    if clustered is None or clustered.empty:
        return ""
    grp = clustered[
        (clustered["pair"] == pair) & (clustered["corpus"] == corpus) & (clustered["metric"] == metric)
    ]
    if grp.empty:
        return ""
    t = grp.set_index("term")
    bits = [f"{_TERMS[k]} {_fc(t.loc[k])}" for k in _TERMS if k in t.index and "model" in k]
    cfm = "C(category):C(framing):C(model)"
    exact = (
        f"; the exact test of category x framing x model over the {int(t.loc[cfm, 'n_splits'])} splits of the "
        f"adjectives {p_clause(t.loc[cfm, 'p_exact'])} (the smallest it can give {pvalue(t.loc[cfm, 'p_min'])})"
        if cfm in t.index and pd.notna(t.loc[cfm, "p_exact"])
        else ""
    )
    return (
        f". Clustered by adjective ({int(grp['n_clusters'].iloc[0])} adjective means per cell, each term "
        "against its interaction with the adjectives): " + "; ".join(bits) + exact
    )


def describe_anova(
    anova: pd.DataFrame, posthocs: pd.DataFrame | None = None, clustered: pd.DataFrame | None = None
) -> str:
    """The per-pair ANOVA in words: every model term with F, its df and the residual df, p (the paper's
    analysis, every prompt independent); with ``clustered``, the same terms of its counterpart clustered by
    adjective; and the post-hoc cells where the two models differ after the Benjamini-Hochberg correction."""
    if anova.empty:
        return "No ANOVA: it needs a pair of models and at least two categories with surviving words."
    out = []
    for (pair, corpus, metric), grp in anova.groupby(["pair", "corpus", "metric"], sort=False):
        t = grp.set_index("term")
        resid = float(t.loc["Residual", "df"])
        bits = [f"{_TERMS[k]} {_f(t.loc[k], resid)}" for k in _TERMS if k in t.index and "model" in k]
        text = (
            f"**{pair}**, {corpus} ({metric}, {int(grp['n_points'].iloc[0])} points, every prompt independent "
            "as in the paper): " + "; ".join(bits) + _clustered_text(clustered, pair, corpus, metric)
        )
        if posthocs is not None and len(posthocs):
            ph = posthocs[
                (posthocs["pair"] == pair) & (posthocs["corpus"] == corpus) & (posthocs["metric"] == metric)
            ]
            sig = ph[ph["p_corrected"] < 0.05]
            cells = ", ".join(
                f"{r.category}/{r.framing} ({r.level_b} minus {r.level_a} {r.difference:+.1f} ranks, "
                f"BH-corrected {p_clause(r.p_corrected)})"
                for r in sig.itertuples()
            )
            text += (
                f". Welch post-hocs: the models differ in {len(sig)} of {len(ph)} category x framing cells"
                + (f": {cells}" if cells else "")
            )
        out.append(text + ".")
    return " ".join(out)


def describe_all_words_anova(anova: pd.DataFrame) -> str:
    """The secondary analysis: the category x model term on summed log-probs and on token-count-adjusted ones,
    with the residual df."""
    if anova.empty:
        return "No all-words ANOVA (it needs a pair of models)."
    out = []
    for (pair, corpus), grp in anova.groupby(["pair", "corpus"], sort=False):
        bits = []
        for metric, label in (
            ("word_sum", "summed log-probs"),
            ("word_sum_adjusted", "token-count adjusted"),
        ):
            t = grp[grp["metric"] == metric].set_index("term")
            if "C(category):C(model)" in t.index:
                bits.append(f"{label}: {_f(t.loc['C(category):C(model)'], float(t.loc['Residual', 'df']))}")
        out.append(f"{pair}, {corpus}, category x model: " + "; ".join(bits))
    return "; ".join(out) + "."


def describe_token_counts(counts: pd.DataFrame) -> str:
    """Mean token count per model and category: the length penalty of a summed log-prob is not shared."""
    if counts.empty:
        return ""
    out = []
    for (model, corpus), grp in counts.groupby(["model", "corpus"], sort=False):
        per = ", ".join(
            f"{r.category} {r.mean_tokens:.2f} ({100 * r.share_single_token:.0f}% one token)"
            for r in grp.itertuples()
        )
        out.append(f"{model}, {corpus}: {per}")
    return "Mean tokens per word as scored: " + "; ".join(out) + "."


def describe_tail(tokens: pd.DataFrame, k: int = 15) -> str:
    """Whether the raw log ratio's extremes are improbable tokens: the median mean probability ((p + q) / 2)
    of the top ``k`` tokens by raw log ratio and by MWLR, per pair (over all prompts)."""
    if tokens.empty:
        return "No token-level rewards."
    out = []
    for pair, grp in tokens[tokens["framing"] == "all"].groupby("pair", sort=False):
        mix = (grp["p"] + grp["q"]) / 2
        by_lr = mix[grp["logratio"].nlargest(k).index].median()
        by_mw = mix[grp["mwlr"].nlargest(k).index].median()
        out.append(
            f"{pair}: the {k} tokens with the highest raw log ratio have a median mean probability of "
            f"{by_lr:.1e}, those with the highest MWLR {by_mw:.1e} ({by_mw / by_lr:.0e} times higher)"
            if by_lr > 0
            else f"{pair}: the {k} tokens with the highest raw log ratio have probability 0"
        )
    return "; ".join(out) + "."


def describe_top_tokens(top: pd.DataFrame, k: int = 5) -> str:
    """The ``k`` tokens at each end of each pair's token-level MWLR (all tokens, all prompts), quoted, and how
    many of the top ones are words (letters only, at least three)."""
    if top.empty:
        return "No token-level rewards."
    out = []
    sel = top[(top["filter"] == "all tokens") & (top["framing"] == "all")]
    for pair, grp in sel.groupby("pair", sort=False):
        ends = {e: grp[grp["end"] == e].sort_values("position") for e in ("top", "bottom")}
        n_words = int(ends["top"]["token"].str.fullmatch(r" ?[A-Za-z]{3,}").sum())
        quoted = {e: ", ".join(repr(t) for t in d["token"].head(k)) for e, d in ends.items()}
        out.append(
            f"{pair}: highest {quoted['top']}; lowest {quoted['bottom']}; {n_words} of the top "
            f"{len(ends['top'])} are words"
        )
    return "; ".join(out) + "."


def describe_contrasts(contrasts: pd.DataFrame) -> str:
    """Where word a beats word b (positive mean MWLR difference), per pair, over the variants."""
    if contrasts.empty:
        return "No model pair: no contrast."
    df = contrasts[contrasts["framing"] == "all"]
    out = []
    for pair, grp in df.groupby("pair", sort=False):
        wins = int((grp["difference"] > 0).sum())
        a, b = grp["text_a"].iloc[0].strip().lower(), grp["text_b"].iloc[0].strip().lower()
        out.append(f"{pair}: *{a}* gets the higher MWLR than *{b}* in {wins} of {len(grp)} variants")
    return "; ".join(out) + "."


def describe_recovery(recovery: pd.DataFrame) -> str:
    """Per level, the metric that recovers the planted words best and worst in the tuned condition."""
    if recovery.empty:
        return "The planted-word validation was skipped (planted_model = '')."
    df = recovery[(recovery["condition"] == "planted") & (recovery["target"] == "planted words")]
    out = []
    for level, grp in df.groupby("level", sort=False):
        best = grp.sort_values(["auc", "r_precision"], ascending=False).iloc[0]
        worst = grp.sort_values(["auc", "r_precision"]).iloc[0]
        out.append(
            f"At the {level} level, **{best['metric']}** ranks the planted words highest (AUC {best['auc']:.3f}, "
            f"R-precision {best['r_precision']:.2f}, median rank {best['median_rank_planted']:.0f} of "
            f"{best['n_candidates']}); **{worst['metric']}** lowest (AUC {worst['auc']:.3f})."
        )
    return " ".join(out)


def describe_validation(validation: pd.DataFrame) -> str:
    """The pass criterion per level and metric: AUC of the tuned model, the differences from the two controls
    with their bootstrap intervals, pass or fail."""
    if validation.empty:
        return "The planted-word validation was skipped (planted_model = '')."
    out = []
    for r in validation.itertuples():
        verdict = "passes" if r.passes else "fails"
        ref = f" against {r.reference}" if r.level.startswith("word (") else ""
        out.append(
            f"{r.level}{ref}, **{r.metric}** {verdict}: AUC {r.auc_planted:.3f}, minus untuned "
            f"{r.diff_untuned:+.3f} [{r.ci_low_untuned:+.3f}, {r.ci_high_untuned:+.3f}], minus sham "
            f"{r.diff_sham:+.3f} [{r.ci_low_sham:+.3f}, {r.ci_high_sham:+.3f}]"
        )
    n = validation.iloc[0]
    head = (
        f"{int(validation['passes'].sum())} of {len(validation)} metric panels pass (95% intervals from "
        f"{int(n['n_bootstrap'])} paired bootstrap replicates over prompts and planted words). "
    )
    return head + "; ".join(out) + "."


def describe_metric_contrasts(contrasts: pd.DataFrame) -> str:
    """MWLR against the raw log ratio on the tuned model, per level and reference: the AUC difference and its
    paired-bootstrap interval."""
    if contrasts.empty:
        return ""
    out = []
    for r in contrasts.itertuples():
        ref = f" against {r.reference}" if r.level.startswith("word (") else ""
        out.append(
            f"{r.level}{ref}: {r.metric_a} AUC {r.auc_a:.3f} vs {r.metric_b} {r.auc_b:.3f}, difference "
            f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        )
    return (
        "MWLR against the raw log ratio on the tuned model (95% paired-bootstrap intervals): "
        + "; ".join(out)
        + "."
    )


def describe_sham(recovery: pd.DataFrame, words: pd.DataFrame, losses: list[float], sham: list[float]) -> str:
    """The sham control in numbers: frequency matching, the training losses, the sham's recovery of its own
    words (whether the sham plant took)."""
    if recovery.empty or words.empty:
        return ""
    sh = words[words["role"] == "sham"]
    own = recovery[(recovery["target"] == "sham words") & (recovery["level"] == "word")]
    best = own.sort_values("auc", ascending=False).iloc[0] if len(own) else None
    text = (
        f"The {len(sh)} sham words ({', '.join(sh['word'])}) differ from their planted words by "
        f"{np.abs(sh['zipf_difference']).mean():.2f} Zipf on average (largest {np.abs(sh['zipf_difference']).max():.2f})."
    )
    if losses and sham:
        text += (
            f" Training loss of the planted fine-tune {losses[0]:.2f} -> {losses[-1]:.2f} (before the last step), "
            f"of the sham {sham[0]:.2f} -> {sham[-1]:.2f}."
        )
    if best is not None:
        text += (
            f" The sham model ranks its own words with AUC up to {best['auc']:.3f} ({best['metric']}), so the "
            "sham plant took."
            if best["auc"] > 0.75
            else f" The sham model ranks its own words with AUC at most {best['auc']:.3f} ({best['metric']})."
        )
    return text


def summary(
    single_anova: pd.DataFrame,
    single_counts: pd.DataFrame,
    all_words_anova: pd.DataFrame,
    contrasts: pd.DataFrame,
    validation: pd.DataFrame,
    single_anova_clustered: pd.DataFrame | None = None,
) -> str:
    """Markdown bullets of the chapter's findings, each from the tables of the run (with
    ``single_anova_clustered``, the ANOVA's counterpart clustered by adjective beside the paper's)."""
    n = single_counts.groupby(["pair", "corpus"])["n_survive"].sum().to_dict() if len(single_counts) else {}
    surv = "; ".join(f"{p}, {c}: {int(v)} words" for (p, c), v in n.items()) or "no pair"
    anova = describe_anova(single_anova, clustered=single_anova_clustered)
    return "\n".join(
        [
            f"- **Single-token words** (primary analysis): {surv}.",
            f"- **Per-pair ANOVA of the single-token ranks**: {anova}",
            f"- **All words** (secondary, token counts differ): {describe_all_words_anova(all_words_anova)}",
            f"- **Word-pair contrast**: {describe_contrasts(contrasts)}",
            f"- **Planted words against the controls**: {describe_validation(validation)}",
        ]
    )


def _term(anova: pd.DataFrame, pair: str, corpus: str, metric: str, term: str) -> str:
    """``F(df, residual df) = F, p`` of one ANOVA term, or ``n/a``."""
    if anova.empty:
        return "n/a"
    t = anova[(anova["pair"] == pair) & (anova["corpus"] == corpus) & (anova["metric"] == metric)]
    t = t.set_index("term")
    if term not in t.index or "Residual" not in t.index:
        return "n/a"
    return _f(t.loc[term], float(t.loc["Residual", "df"]))


def _cterm(clustered: pd.DataFrame, pair: str, corpus: str, metric: str, term: str) -> pd.Series | None:
    """One term's row of the clustered ANOVA, or None."""
    if clustered.empty:
        return None
    t = clustered[
        (clustered["pair"] == pair) & (clustered["corpus"] == corpus) & (clustered["metric"] == metric)
    ]
    t = t[t["term"] == term]
    return t.iloc[0] if len(t) else None


def anova_verdict(row: pd.Series | None) -> str:
    """The verdict on the category x framing x model term from its clustered test: the two models differ in
    how framing moves the categories (p < 0.05), else inconclusive (never "no difference")."""
    if row is None or pd.isna(row["p"]):
        return "n/a"
    if row["p"] < 0.05:
        return (
            "framing moves the categories differently in the two models (clustered p < 0.05, which rests on "
            "the F distribution: the exact split test cannot go that low)"
            if pd.notna(row["p_min"]) and row["p_min"] > 0.05
            else "framing moves the categories differently in the two models (clustered p < 0.05)"
        )
    return "inconclusive: the clustered test does not establish that framing moves the categories differently"


def _clustered_numbers(results: Any, pair: str, big2: str | None) -> dict[str, str]:
    """The clustered counterparts of the first pair's numbers: ANOVA terms, exact p, clusters, verdicts."""
    cm, cfm = "C(category):C(model)", "C(category):C(framing):C(model)"
    ca = results.single_anova_clustered
    row = _cterm(ca, pair, big2, "single_token", cfm) if big2 else None
    cmr = _cterm(ca, pair, big2, "single_token", cm) if big2 else None
    out = {
        "single_category_model_clustered": _fc(cmr) if cmr is not None else "n/a",
        "single_category_framing_model_clustered": _fc(row) if row is not None else "n/a",
        "single_cfm_verdict": anova_verdict(row),
        "single_cfm_p_exact": p_clause(row["p_exact"]) if row is not None else "p n/a",
        "n_splits": str(int(row["n_splits"])) if row is not None and row["n_splits"] else "n/a",
        "p_min": pvalue(row["p_min"]) if row is not None else "n/a",
        "n_clusters": str(int(row["n_clusters"])) if row is not None else "n/a",
    }
    first = results.pairs[0] if results.pairs else None
    out["n_adjectives"] = _n_adjectives(results.single_contrasts, first, big2)
    corpus = big2 or (results.params.corpora[0] if results.params.corpora else "")
    for key, metric in (("all_words", "word_sum"), ("adjusted", "word_sum_adjusted")):
        r = _cterm(results.anova_clustered, pair, corpus, metric, cm) if pair else None
        out[f"{key}_category_model_clustered"] = _fc(r) if r is not None else "n/a"
    r = _cterm(results.anova_clustered, pair, corpus, "word_sum", cm) if pair else None
    out["word_n_clusters"] = str(int(r["n_clusters"])) if r is not None else "n/a"
    return out


def _n_adjectives(contrasts: pd.DataFrame, first: tuple[str, str] | None, big2: str | None) -> str:
    """The adjectives per framing behind the first pair's clustered difference of D(Communion), e.g.
    ``3 positive and 3 negative``."""
    if contrasts.empty or first is None or big2 is None:
        return "n/a"
    p, q = first
    sel = contrasts[
        (contrasts["corpus"] == big2)
        & (contrasts["category"] == CATEGORY)
        & (contrasts["rm"] == f"{q} \u2212 {p}")
    ]
    if sel.empty:
        return "n/a"
    return f"{int(sel['n_positive'].iloc[0])} positive and {int(sel['n_negative'].iloc[0])} negative"


def _pair_numbers(results: Any) -> dict[str, str]:
    """Numbers of the first pair: surviving single-token words, the ANOVA terms, the contrast, the tail."""
    first = results.pairs[0] if results.pairs else None
    pair = f"{first[1]} vs {first[0]}" if first else ""
    counts = results.single_counts
    sel = counts[counts["pair"] == pair] if len(counts) else counts
    present = set(sel["corpus"]) if len(sel) else set()
    big2 = next((c for c in BIG2 if c in present), None)
    out = {
        "first_pair": pair or "n/a",
        "single_survivors": "; ".join(
            f"{c} {int(g['n_survive'].sum())} of {int(g['n_words'].sum())}"
            for c, g in (sel.groupby("corpus", sort=False) if len(sel) else [])
        )
        or "n/a",
        "big2_corpus": big2 or "n/a",
        "big2_single_words": str(int(sel.loc[sel["corpus"] == big2, "n_survive"].sum())) if big2 else "n/a",
    }
    cm, cfm = "C(category):C(model)", "C(category):C(framing):C(model)"
    out["single_category_model"] = (
        _term(results.single_anova, pair, big2, "single_token", cm) if big2 else "n/a"
    )
    out["single_category_framing_model"] = (
        _term(results.single_anova, pair, big2, "single_token", cfm) if big2 else "n/a"
    )
    corpus = big2 or (results.params.corpora[0] if results.params.corpora else "")
    out["all_words_corpus"] = corpus if pair else "n/a"
    out["all_words_category_model"] = _term(results.anova, pair, corpus, "word_sum", cm) if pair else "n/a"
    out["adjusted_category_model"] = (
        _term(results.anova, pair, corpus, "word_sum_adjusted", cm) if pair else "n/a"
    )
    con = results.contrasts
    con = con[(con["pair"] == pair) & (con["framing"] == "all")] if len(con) else con
    out["contrast_wins"] = f"{int((con['difference'] > 0).sum())} of {len(con)}" if len(con) else "n/a"
    out["tail_ratio"] = _tail_ratio(results.token_rewards, pair, int(results.params.top_k))
    out.update(_clustered_numbers(results, pair, big2))
    return out


def _tail_ratio(tokens: pd.DataFrame, pair: str, k: int) -> str:
    """How many times more probable the top-``k`` tokens by MWLR are than those by the raw log ratio."""
    if tokens.empty or not pair:
        return "n/a"
    grp = tokens[(tokens["framing"] == "all") & (tokens["pair"] == pair)]
    if grp.empty:
        return "n/a"
    mix = (grp["p"] + grp["q"]) / 2
    by_lr, by_mw = (
        mix[grp["logratio"].nlargest(k).index].median(),
        mix[grp["mwlr"].nlargest(k).index].median(),
    )
    return f"{by_mw / by_lr:.0e}" if by_lr > 0 else "n/a"


def _validation_numbers(results: Any) -> dict[str, str]:
    """The planted-word validation: panels passing, the word-level MWLR panel's AUCs, the design."""
    v, words = results.validation, results.planted_words
    out = {
        "validation_passes": f"{int(v['passes'].sum())} of {len(v)}" if len(v) else "n/a",
        "n_bootstrap": str(int(v["n_bootstrap"].iloc[0])) if len(v) else "n/a",
        "n_planted": str(int((words["role"] == "planted").sum())) if len(words) else "n/a",
        "planted_steps": str(int(results.params.planted_steps)) if len(v) else "n/a",
        "sham_zipf_tolerance": number(ZIPF_TOLERANCE, 2),
        "sham_zipf_mean": (
            number(float(np.abs(words.loc[words["role"] == "sham", "zipf_difference"]).mean()), 2)
            if len(words)
            else "n/a"
        ),
    }
    mc = results.metric_contrasts
    out["mwlr_beats_raw"] = f"{int((mc['ci_low'] > 0).sum())} of {len(mc)}" if len(mc) else "n/a"
    return out


def key_numbers(results: Any) -> dict[str, str]:
    """The numbers the chapter's prose cites, as text to glue (every key always present; ``n/a`` where the
    run has no such number, e.g. a run without a model pair, without the Big Two nouns or without the
    validation). The keys of :data:`MARKDOWN_KEYS` hold the findings' answers as Markdown."""
    p = results.params
    out = {
        "n_models": str(len(p.models)),
        "models": ", ".join(p.models),
        "n_pairs": str(len(results.pairs)),
        "corpora": ", ".join(p.corpora),
        "n_prompts": str(len(results.prompts)),
        "n_word_prompts": str(len(results.word_prompts)),
        "n_corpus_words": f"{results.word_logprobs['word'].nunique():,}"
        if len(results.word_logprobs)
        else "n/a",
        "top_k": str(int(p.top_k)),
        "contrast_a": p.contrast[0],
        "contrast_b": p.contrast[1],
        **_pair_numbers(results),
        **_validation_numbers(results),
    }
    found = {f.key.rsplit("_", 1)[-1] if f.key.endswith("_pair") else f.key: f for f in results.findings}
    for key, f in (("pair", found.get("pair")), ("planted", found.get("planted"))):
        out[f"{key}_estimate"] = f.estimate if f else "n/a"
        out[f"{key}_interval"] = (f.interval or "no interval") if f else "n/a"
        out[f"{key}_baseline"] = (f.baseline or "none") if f else "n/a"
    out["pair_answer"] = (
        found["pair"].answer
        if "pair" in found
        else "No pair of models with Big Two single-token words in this run."
    )
    out["planted_answer"] = (
        found["planted"].answer
        if "planted" in found
        else "The planted-word validation was skipped in this run."
    )
    return out
