"""The numbers the implicit chapter's prose cites (glued into its Markdown with ``{glue:text}``), computed from
a run: the design, the first pair's single-token and all-words ANOVA terms, the word contrast, the tail of the
token-level rewards, the planted-word validation, the findings' answers; with the data-chosen phrases and lists
of :mod:`.readings`. Every key is always present (``n/a`` where the run has no such number: no model pair, no
Big Two corpus, the validation skipped)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.formats import number, p_clause, pvalue
from .findings import BIG2, CATEGORY
from .plant_finetune import ZIPF_TOLERANCE
from .readings import anova_verdict, clustered_clause, f_clause, readings

__all__ = ["MARKDOWN_KEYS", "key_numbers"]

#: The keys of :func:`key_numbers` that hold MyST Markdown (pasted with ``{glue:md}``): the findings' answers.
MARKDOWN_KEYS = ("pair_answer", "planted_answer")


def _term(anova: pd.DataFrame, pair: str, corpus: str, metric: str, term: str) -> str:
    """``F(df, residual df) = F, p`` of one ANOVA term, or ``n/a``."""
    if anova.empty:
        return "n/a"
    t = anova[(anova["pair"] == pair) & (anova["corpus"] == corpus) & (anova["metric"] == metric)]
    t = t.set_index("term")
    if term not in t.index or "Residual" not in t.index:
        return "n/a"
    return f_clause(t.loc[term], float(t.loc["Residual", "df"]))


def _cterm(clustered: pd.DataFrame, pair: str, corpus: str, metric: str, term: str) -> pd.Series | None:
    """One term's row of the clustered ANOVA, or None."""
    if clustered.empty:
        return None
    t = clustered[
        (clustered["pair"] == pair) & (clustered["corpus"] == corpus) & (clustered["metric"] == metric)
    ]
    t = t[t["term"] == term]
    return t.iloc[0] if len(t) else None


def _clustered_numbers(results: Any, pair: str, big2: str | None) -> dict[str, str]:
    """The clustered counterparts of the first pair's numbers: ANOVA terms, exact p, clusters, verdicts."""
    cm, cfm = "C(category):C(model)", "C(category):C(framing):C(model)"
    ca = results.single_anova_clustered
    row = _cterm(ca, pair, big2, "single_token", cfm) if big2 else None
    cmr = _cterm(ca, pair, big2, "single_token", cm) if big2 else None
    out = {
        "single_category_model_clustered": clustered_clause(cmr) if cmr is not None else "n/a",
        "single_category_framing_model_clustered": clustered_clause(row) if row is not None else "n/a",
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
        out[f"{key}_category_model_clustered"] = clustered_clause(r) if r is not None else "n/a"
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
        **readings(results),
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
