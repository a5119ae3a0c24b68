"""Chapter 3, implicit rewards: value biases in language-model log-probabilities (the paper's Sections 4-5).

``run(params)`` computes, for every model, the full next-token distributions under ``prompts`` (all 54 by
default) and the log-probabilities of the corpus words under ``word_prompts`` (a subset by default); then

* the **primary** analysis, the paper's Fig. 2 (:mod:`.single_token`, :mod:`.ranking`): per pair, the corpus
  words that are one token under both models, ranked per model and prompt by their log-prob, the median rank
  per category, one ANOVA ``median_rank ~ category * framing * model`` per pair and corpus and Welch +
  Benjamini-Hochberg post-hocs (the paper's analysis, every prompt independent), beside it the same ANOVA
  with the prompts clustered by adjective and each model's framing contrast ``D`` and the pair's difference,
  clustered by adjective (the chapter's verdicts use these);
* the **secondary**, all-words analysis (summed token log-probs, also adjusted for the token count);
* the implicit rewards of every pair (:mod:`.metrics`, :mod:`.rewards`), the top tokens, the word contrast;
* the planted-word validation with its controls (:mod:`.plant_validation`).

It writes ``single_token_words.csv``, ``single_token_counts.csv``, ``single_token_ranks.parquet``,
``single_token_anova.csv``, ``single_token_anova_clustered.csv``, ``single_token_posthocs.csv``,
``single_token_framing_contrasts.csv``, ``word_logprobs.parquet``, ``token_counts.csv``,
``median_ranks.parquet``, ``all_words_anova.csv``, ``all_words_anova_clustered.csv``, ``all_words_posthocs.csv``, ``word_mwlr.parquet``,
``token_mwlr.parquet``, ``token_alignment.csv``, ``token_collisions.csv``, ``top_tokens.csv``,
``pair_contrasts.csv``, ``planted_words.csv``, ``planted_recovery.csv``, ``planted_ranks.csv``,
``planted_validation.csv``, ``planted_metric_contrasts.csv``, ``planted_strengths.csv`` and
``planted_strength_differences.csv`` (the graded validation, :mod:`.graded`); the chapter's reader tables as CSV downloads
(``tables/<name>.csv``, :data:`READER_TABLES`); the chapter's answers ``findings.json`` (for the findings page);
with a ``manifest.json`` (models with their prompt format, inputs, seeds, timings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...core.findings import Finding, write_findings
from ...core.manifest import RunRecord
from ...data.corpora import read_corpora_table
from ...data.prompts import prompt_table, prompts_checksum
from ...data.scores import labels_of
from ...engine.inputs import resolve_prompt_format
from ...engine.logprobs import LogProbEngine
from ...models.loading import cpu_threads, load_tokenizer, model_info, quiet_transformers, verify_local_model
from ...models.registry import ModelSpec
from . import plant_validation
from .findings import findings as chapter_findings
from .metrics import VocabAlignment, align_vocabularies, require_same_tokenizer
from .params import TOKEN_METRICS, Params, resolve_pairs
from .ranking import (
    metric_median_ranks,
    pair_anova,
    pair_anova_clustered,
    pair_framing_contrasts,
    scores_table,
    token_adjusted,
    token_counts,
)
from .rewards import (
    TOKEN_COLUMNS,
    WORD_PAIR_COLUMNS,
    contrast_variants,
    pair_contrasts,
    pair_label,
    token_rewards,
    top_tokens,
    word_rewards,
)
from .single_token import (
    pair_survivors,
    single_token_logprobs,
    single_token_words,
    survivor_counts,
    verify_survivors,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["READER_TABLES", "Results", "run"]

#: The chapter's tables, as the CSV downloads the book offers beside them (``tables/<name>.csv``).
READER_TABLES = (
    "models",
    "engine",
    "alignment",
    "collisions",
    "timings",
    "single_counts",
    "single_words",
    "single_anova",
    "single_anova_clustered",
    "single_posthocs",
    "single_contrasts",
    "token_counts",
    "anova",
    "anova_clustered",
    "posthocs",
    "top_tokens",
    "contrasts",
    "planted_words",
    "validation",
    "recovery",
    "planted_ranks",
    "metric_contrasts",
    "graded",
    "graded_differences",
)


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`); built by keyword, filled step by step."""

    params: Params
    output_dir: str = ""
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, family, type, prompt format
    prompts: list[str] = field(default_factory=list)  # the single-token analysis's prompt ids
    word_prompts: list[str] = field(default_factory=list)  # the all-words analysis's prompt ids
    pairs: list[tuple[str, str]] = field(default_factory=list)  # the model pairs (p, q)
    single_words: pd.DataFrame = field(default_factory=pd.DataFrame)  # single_token_words.csv
    single_counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # single_token_counts.csv
    single_medians: pd.DataFrame = field(default_factory=pd.DataFrame)  # single_token_ranks.parquet
    single_anova: pd.DataFrame = field(default_factory=pd.DataFrame)  # single_token_anova.csv
    single_anova_clustered: pd.DataFrame = field(default_factory=pd.DataFrame)  # ..._anova_clustered.csv
    single_contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # ..._framing_contrasts.csv
    single_posthocs: pd.DataFrame = field(default_factory=pd.DataFrame)  # single_token_posthocs.csv
    word_logprobs: pd.DataFrame = field(default_factory=pd.DataFrame)  # word_logprobs.parquet
    token_counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_counts.csv
    medians: pd.DataFrame = field(default_factory=pd.DataFrame)  # median_ranks.parquet (all words)
    anova: pd.DataFrame = field(default_factory=pd.DataFrame)  # all_words_anova.csv (secondary)
    anova_clustered: pd.DataFrame = field(default_factory=pd.DataFrame)  # all_words_anova_clustered.csv
    posthocs: pd.DataFrame = field(default_factory=pd.DataFrame)  # all_words_posthocs.csv (secondary)
    word_rewards: pd.DataFrame = field(default_factory=pd.DataFrame)  # word_mwlr.parquet
    token_rewards: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_mwlr.parquet
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_alignment.csv
    collisions: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_collisions.csv
    top_tokens: pd.DataFrame = field(default_factory=pd.DataFrame)  # top_tokens.csv
    contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # pair_contrasts.csv
    planted_words: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_words.csv
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_recovery.csv
    planted_ranks: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_ranks.csv
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_validation.csv
    metric_contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_metric_contrasts.csv
    graded: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_strengths.csv
    graded_differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_strength_differences.csv
    graded_losses: pd.DataFrame = field(default_factory=pd.DataFrame)  # manifest extra
    planted_losses: list[float] = field(default_factory=list)
    sham_losses: list[float] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # findings.json (the findings page)
    timings: dict[str, float] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)

    def csv(self, name: str) -> Path:
        """The CSV download of one of the chapter's tables (:data:`READER_TABLES`)."""
        return Path(self.output_dir) / "tables" / f"{name}.csv"

    def reader_tables(self) -> dict[str, pd.DataFrame]:
        """The chapter's tables by download name (:data:`READER_TABLES`), flat (lists joined, no index)."""
        engine = pd.DataFrame.from_dict(self.engine_stats, orient="index").rename_axis("model").reset_index()
        timings = pd.DataFrame({"step": list(self.timings), "seconds": list(self.timings.values())})
        tables = {
            "models": self.models,
            "engine": engine if self.engine_stats else pd.DataFrame(),
            "alignment": self.alignment,
            "collisions": _flat(self.collisions),
            "timings": timings,
            "single_counts": self.single_counts,
            "single_words": _flat(self.single_words),
            "single_anova": self.single_anova,
            "single_anova_clustered": self.single_anova_clustered,
            "single_posthocs": self.single_posthocs,
            "single_contrasts": self.single_contrasts,
            "token_counts": self.token_counts,
            "anova": self.anova,
            "anova_clustered": self.anova_clustered,
            "posthocs": self.posthocs,
            "top_tokens": self.top_tokens,
            "contrasts": self.contrasts,
            "planted_words": self.planted_words,
            "validation": self.validation,
            "recovery": self.recovery,
            "planted_ranks": self.planted_ranks,
            "metric_contrasts": self.metric_contrasts,
            "graded": self.graded,
            "graded_differences": self.graded_differences,
        }
        return {name: tables[name] for name in READER_TABLES}


@dataclass
class _Setup:
    """What every step needs: resolved models and pairs, the prompts, the corpus labels."""

    params: Params
    specs: dict[str, ModelSpec]
    families: dict[str, str]
    formats: dict[str, str]
    pairs: list[tuple[str, str]]
    device: str
    prompts: dict[str, str]  # prompt_id -> text: the single-token analysis, token-level rewards
    word_prompts: dict[str, str]  # prompt_id -> text: the all-words analysis, word rewards, contrast
    framing: dict[str, str]  # prompt_id -> positive/negative (every prompt used)
    labels: pd.DataFrame  # corpus, word, category, subcategory
    corpora: pd.DataFrame  # the corpora table (zipf_frequency for the sham plant)
    tokenizers: dict[str, Any] = field(default_factory=dict)
    extra_words: list[str] = field(default_factory=list)  # planted and sham words (validation)


@dataclass
class _LogProbs:
    """The per-model outputs of the engines."""

    words: pd.DataFrame  # word log-probs of every model under word_prompts, stacked (extra words included)
    variants: pd.DataFrame  # log-probs of the contrast variants (exact texts)
    next_token: dict[str, torch.Tensor]  # full next-token log-probs per model (rows: setup.prompts)
    single: pd.DataFrame  # single_token_words of every model, stacked


def _setup(params: Params, record: RunRecord) -> _Setup:
    """Resolve models, pairs, device and prompts; read the corpus labels from the corpora run."""
    import torch

    device = params.device if params.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    specs = params.specs()
    for spec in specs.values():  # a model folder a run made must still match that run's manifest
        record.add_inputs(verify_local_model(spec))
    families = {m: s.family for m, s in specs.items()}
    table = prompt_table(params.prompts)
    words_table = prompt_table(params.word_prompt_ids())
    record.add_inputs(prompts_checksum())
    corpora, sums = read_corpora_table(params.corpora_input(), params.results_root, params.corpora)
    record.add_inputs(sums)
    record.seeds.setdefault("seed", int(params.seed))
    both = pd.concat([table, words_table])
    return _Setup(
        params=params,
        specs=specs,
        families=families,
        formats={m: resolve_prompt_format(specs[m], params.format_of(m)) for m in params.models},
        pairs=resolve_pairs(params.models, params.pairs, families),
        device=device,
        prompts=dict(zip(table["prompt_id"], table["text"], strict=True)),
        word_prompts=dict(zip(words_table["prompt_id"], words_table["text"], strict=True)),
        framing=dict(zip(both["prompt_id"], both["framing"], strict=False)),
        labels=labels_of(corpora, params.corpora),
        corpora=corpora,
    )


def _check_tokenizers(setup: _Setup, record: RunRecord) -> None:
    """A token log ratio across tokenizers fails here, before any model is loaded."""
    if "token_logratio" not in setup.params.metrics:
        return
    with record.timed("tokenizers"):
        setup.tokenizers = {m: load_tokenizer(setup.specs[m]) for m in setup.params.models}
        for a, b in setup.pairs:
            require_same_tokenizer(setup.tokenizers[a], setup.tokenizers[b], a, b)


def _model_logprobs(setup: _Setup, res: Results, record: RunRecord) -> _LogProbs:
    """Per model (one in memory at a time): the single-token table, the next-token distributions under
    ``prompts``, the word log-probs under ``word_prompts`` (corpus words and the validation's words)."""
    p = setup.params
    words = list(dict.fromkeys([*setup.labels["word"], *setup.extra_words]))
    variants = contrast_variants(*p.contrast)
    variant_texts = list(dict.fromkeys([*variants["text_a"], *variants["text_b"]]))
    word_frames, variant_frames, single_frames, next_tok, model_rows = [], [], [], {}, []
    for m in p.models:
        spec, fmt = setup.specs[m], setup.formats[m]
        with record.timed(f"load {m}"), quiet_transformers():
            eng = LogProbEngine.from_registry(
                spec, prompt_format=fmt, device=setup.device, batch_size=p.batch_size
            )
        info = model_info(spec)
        record.add_model(**info, **eng.describe())
        model_rows.append(
            {
                "model": m,
                "family": setup.families[m],
                "type": spec.type,
                "size": spec.size or "",
                "hub_id": spec.hub_id or "not recorded",
                "quantization": info.get("quantization") or "none",
                "vocabulary": len(eng.tokenizer),
                **eng.describe(),
            }
        )
        with record.timed(f"single-token words {m}"):  # under the first prompt; survivors re-checked later
            labelled = list(dict.fromkeys(setup.labels["word"]))
            first = dict([next(iter(setup.prompts.items()))])
            single_frames.append(single_token_words(eng.tokenizer, fmt, first, labelled, m))
        with record.timed(f"next-token log-probs {m}"):
            next_tok[m] = eng.next_token_logprobs(setup.prompts)
        with record.timed(f"word log-probs {m}"):
            word_frames.append(eng.word_logprobs(setup.word_prompts, words, p.include_end_of_turn))
            variant_frames.append(
                eng.word_logprobs(setup.word_prompts, variant_texts, p.include_end_of_turn, separator="")
            )
        setup.tokenizers.setdefault(m, eng.tokenizer)
        res.engine_stats[m] = {
            "forward_positions": eng.stats.forward_positions,
            "naive_positions": eng.stats.naive_positions,
            "seconds": round(eng.stats.seconds, 2),
        }
        del eng
    res.models = pd.DataFrame(model_rows)
    return _LogProbs(
        words=pd.concat(word_frames, ignore_index=True),
        variants=pd.concat(variant_frames, ignore_index=True),
        next_token=next_tok,
        single=pd.concat(single_frames, ignore_index=True),
    )


def _single_token_analysis(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """The primary analysis: per pair, the words one token under both models, ranked by their log-prob under
    every prompt; median ranks per category; the ANOVA and the post-hocs of the pair, per corpus, its
    counterpart clustered by adjective and the framing contrasts of both models and their difference."""
    p = setup.params
    with record.timed("single-token analysis"):
        lp.single = verify_survivors(lp.single, setup.tokenizers, setup.formats, setup.prompts, setup.pairs)
        res.single_words = pair_survivors(lp.single, setup.labels, setup.pairs, pair_label)
        res.single_counts = survivor_counts(res.single_words)
        medians, anovas, posthocs, clustered, contrasts = [], [], [], [], []
        for a, b in setup.pairs:
            pair = pair_label(a, b)
            kept = res.single_words[(res.single_words["pair"] == pair) & res.single_words["survives"]]
            words = list(dict.fromkeys(kept["word"]))
            if not words:
                continue
            per_model = [
                single_token_logprobs(
                    lp.next_token[m],
                    lp.single[lp.single["model"] == m],
                    list(setup.prompts),
                    words,
                    p.duplicates,
                )
                for m in (a, b)
            ]
            labels = kept[["corpus", "word", "category", "subcategory"]].drop_duplicates()
            table = scores_table(pd.concat(per_model), labels, "logprob", family=setup.families)
            med = metric_median_ranks(table, "single_token")
            med.insert(0, "pair", pair)
            medians.append(med)
            an, ph = pair_anova(med, a, b, pair)
            anovas.append(an)
            posthocs.append(ph)
            clustered.append(pair_anova_clustered(med, a, b, pair))
            contrasts.append(pair_framing_contrasts(med, a, b, pair))
        res.single_medians = _stack(medians)
        res.single_anova = _stack(anovas)
        res.single_posthocs = _stack(posthocs)
        res.single_anova_clustered = _stack(clustered)
        res.single_contrasts = _stack(contrasts)


def _implicit_rewards(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """Word-level rewards of every pair; token-level rewards on each pair's aligned vocabulary."""
    p = setup.params
    alignments: dict[tuple[str, str], VocabAlignment] = {}
    if any(m in TOKEN_METRICS for m in p.metrics):
        with record.timed("align vocabularies"):
            for a, b in setup.pairs:
                alignments[(a, b)] = align_vocabularies(
                    setup.tokenizers[a], setup.tokenizers[b], a, b, duplicates=p.duplicates
                )
    with record.timed("implicit rewards"):
        corpus_words = lp.words[lp.words["word"].isin(set(setup.labels["word"]))]
        res.word_rewards = (
            word_rewards(corpus_words, setup.pairs)
            if setup.pairs
            else pd.DataFrame(columns=WORD_PAIR_COLUMNS)
        )
        framings = [setup.framing[x] for x in setup.prompts]
        frames = [
            token_rewards(lp.next_token[a], lp.next_token[b], al, framings, pair_label(a, b))
            for (a, b), al in alignments.items()
        ]
        res.token_rewards = (
            pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TOKEN_COLUMNS)
        )
        res.alignment = pd.DataFrame([al.summary() for al in alignments.values()])
        res.collisions = (
            pd.concat(
                [al.collisions.assign(pair=pair_label(a, b)) for (a, b), al in alignments.items()],
                ignore_index=True,
            )
            if alignments
            else pd.DataFrame()
        )


def _all_words_analysis(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """The secondary analysis on every corpus word (summed token log-probs, under ``word_prompts``): median
    ranks of every scorer and metric, the token counts, and per pair the ANOVA of the summed log-probs and of
    the token-count-adjusted ones; the top tokens and the word-pair contrast."""
    p, labels, wr = setup.params, setup.labels, res.word_rewards
    with record.timed("all-words analysis"):
        words = lp.words[lp.words["word"].isin(set(labels["word"]))]
        res.token_counts = token_counts(words, labels)
        summed = scores_table(words, labels, "logprob", family=setup.families, extra=["n_tokens"])
        parts = [
            metric_median_ranks(summed, "word_sum"),
            metric_median_ranks(token_adjusted(summed), "word_sum_adjusted"),
        ]
        if "word_mean" in p.metrics:
            table = scores_table(words, labels, "logprob_mean", family=setup.families)
            parts.append(metric_median_ranks(table, "word_mean"))
        for metric in ("word_mwlr", "word_logratio"):
            if metric in p.metrics and len(wr):
                parts.append(
                    metric_median_ranks(scores_table(wr, labels, metric.split("_", 1)[1], "pair"), metric)
                )
        res.medians = pd.concat(parts, ignore_index=True)
        tested = res.medians[res.medians["metric"].isin(["word_sum", "word_sum_adjusted"])]
        fits = [pair_anova(tested, a, b, pair_label(a, b)) for a, b in setup.pairs]
        res.anova = pd.concat([f[0] for f in fits], ignore_index=True) if fits else pd.DataFrame()
        res.anova_clustered = _stack(
            [pair_anova_clustered(tested, a, b, pair_label(a, b)) for a, b in setup.pairs]
        )
        res.posthocs = pd.concat([f[1] for f in fits], ignore_index=True) if fits else pd.DataFrame()
        tokens = res.token_rewards
        if len(tokens):
            res.top_tokens = pd.concat(
                [
                    top_tokens(tokens, p.top_k).assign(filter="all tokens"),
                    top_tokens(tokens, p.top_k, words_only=True).assign(filter="words only"),
                ],
                ignore_index=True,
            )
        if setup.pairs:
            res.contrasts = pair_contrasts(lp.variants, setup.pairs, *p.contrast, framing=setup.framing)


def _word_table(setup: _Setup, lp: _LogProbs) -> pd.DataFrame:
    """The corpus words' log-probs with their labels and the prompts' framing (``word_logprobs.parquet``)."""
    words = lp.words[lp.words["word"].isin(set(setup.labels["word"]))]
    wl = words.merge(setup.labels, on="word", how="left")
    wl["framing"] = wl["prompt_id"].map(setup.framing)
    return wl


def _write(res: Results, record: RunRecord) -> None:
    """Every output table through the record, then the manifest (with the engines' work and the losses)."""
    record.extra["engine"] = res.engine_stats
    record.extra["planted_losses"] = res.planted_losses
    record.extra["sham_losses"] = res.sham_losses
    record.extra["graded_losses"] = res.graded_losses.to_dict(orient="records")
    record.write_csv(_flat(res.single_words), "single_token_words.csv")
    record.write_csv(res.single_counts, "single_token_counts.csv")
    record.write_parquet(res.single_medians, "single_token_ranks.parquet")
    record.write_csv(res.single_anova, "single_token_anova.csv")
    record.write_csv(res.single_anova_clustered, "single_token_anova_clustered.csv")
    record.write_csv(res.single_posthocs, "single_token_posthocs.csv")
    record.write_csv(res.single_contrasts, "single_token_framing_contrasts.csv")
    record.write_parquet(res.word_logprobs, "word_logprobs.parquet")
    record.write_csv(res.token_counts, "token_counts.csv")
    record.write_parquet(res.medians, "median_ranks.parquet")
    record.write_csv(res.anova, "all_words_anova.csv")
    record.write_csv(res.anova_clustered, "all_words_anova_clustered.csv")
    record.write_csv(res.posthocs, "all_words_posthocs.csv")
    record.write_parquet(res.word_rewards, "word_mwlr.parquet")
    record.write_parquet(res.token_rewards, "token_mwlr.parquet")
    record.write_csv(res.alignment, "token_alignment.csv")
    record.write_csv(_flat(res.collisions), "token_collisions.csv")
    record.write_csv(res.top_tokens, "top_tokens.csv")
    record.write_csv(res.contrasts, "pair_contrasts.csv")
    record.write_csv(res.planted_words, "planted_words.csv")
    record.write_csv(res.recovery, "planted_recovery.csv")
    record.write_csv(res.planted_ranks, "planted_ranks.csv")
    record.write_csv(res.validation, "planted_validation.csv")
    record.write_csv(res.metric_contrasts, "planted_metric_contrasts.csv")
    record.write_csv(res.graded, "planted_strengths.csv")
    record.write_csv(res.graded_differences, "planted_strength_differences.csv")
    res.timings = dict(record.timings)  # the steps so far (the manifest has the final ones)
    for name, table in res.reader_tables().items():
        record.write_csv(table, f"tables/{name}.csv")
    res.findings = chapter_findings(res)
    write_findings(record, res.findings)
    record.finish()
    res.timings = dict(record.timings)


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The non-empty frames stacked (an empty frame without any)."""
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """List-valued columns (ids, tokens) joined by spaces, for CSV."""
    out = df.copy()
    for c in ("ids", "tokens"):
        if c in out:
            out[c] = out[c].map(lambda v: " ".join(map(str, v)))
    return out


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: log-probs of every model, the single-token and all-words analyses, implicit rewards of
    every pair, the planted-word validation with its controls, outputs."""
    record = record or RunRecord.for_params(params)
    with cpu_threads(params.threads):
        return _run(params, record)


def _run(params: Params, record: RunRecord) -> Results:
    setup = _setup(params, record)
    res = Results(
        params=params,
        output_dir=str(record.output_dir),
        prompts=list(setup.prompts),
        word_prompts=list(setup.word_prompts),
        pairs=list(setup.pairs),
    )
    _check_tokenizers(setup, record)
    plan = plant_validation.choose_words(
        setup.params, setup.corpora, setup.labels, setup.specs, setup.word_prompts, record
    )
    setup.extra_words = plan.words() if plan else []
    lp = _model_logprobs(setup, res, record)
    _single_token_analysis(setup, lp, res, record)
    _implicit_rewards(setup, lp, res, record)
    _all_words_analysis(setup, lp, res, record)
    if plan is not None:
        out = plant_validation.validate(plan, setup.params, setup.prompts, setup.word_prompts, lp.words, lp.next_token,
                               setup.families, setup.device, record)  # fmt: skip
        res.planted_words, res.recovery, res.planted_ranks, res.validation, res.metric_contrasts = out.tables
        res.planted_losses, res.sham_losses = out.planted_losses, out.sham_losses
        res.graded, res.graded_differences, res.graded_losses = (
            out.graded,
            out.graded_differences,
            out.graded_losses,
        )
    res.word_logprobs = _word_table(setup, lp)
    _write(res, record)
    return res
