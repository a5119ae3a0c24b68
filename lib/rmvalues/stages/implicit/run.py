"""Chapter 3, implicit rewards: value biases in language-model log-probabilities (the paper's Sections 4-5).

``run(params)`` computes the log-probabilities of the corpus words (and the full next-token distributions) of
every model, the implicit rewards of every pair (:mod:`.metrics`, :mod:`.rewards`), the median ranks and the
3-way ANOVA, the top tokens and the word-pair contrast, and the planted-word validation (:mod:`.validation`).
It writes ``word_logprobs.parquet``, ``word_mwlr.parquet``, ``token_mwlr.parquet``, ``token_alignment.csv``,
``token_collisions.csv``, ``median_ranks.parquet``, ``anova.csv``, ``anova_posthocs.csv``, ``top_tokens.csv``,
``pair_contrasts.csv``, ``planted_recovery.csv`` and ``planted_ranks.csv``, with a ``manifest.json`` that
records the models (with their prompt format), the inputs, the seed and the timings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...core.manifest import RunRecord
from ...data.corpora import read_corpora_table
from ...data.prompts import prompt_table, prompts_checksum
from ...data.scores import labels_of
from ...engine.inputs import resolve_prompt_format
from ...engine.logprobs import LogProbEngine
from ...models.loading import load_tokenizer, model_info, quiet_transformers
from ...models.registry import ModelSpec, get_spec
from .metrics import VocabAlignment, align_vocabularies, require_same_tokenizer
from .params import TOKEN_METRICS, Params, resolve_pairs
from .rewards import (
    TOKEN_COLUMNS,
    WORD_PAIR_COLUMNS,
    contrast_variants,
    lm_anova,
    median_ranks,
    pair_contrasts,
    pair_label,
    scores_table,
    token_rewards,
    top_tokens,
    word_rewards,
)
from .validation import plant_words, planted_recovery

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Results", "run"]


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`); built by keyword, filled step by step."""

    params: Params
    output_dir: str = ""
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, family, type, prompt format
    word_logprobs: pd.DataFrame = field(default_factory=pd.DataFrame)  # word_logprobs.parquet
    word_rewards: pd.DataFrame = field(default_factory=pd.DataFrame)  # word_mwlr.parquet
    token_rewards: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_mwlr.parquet
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_alignment.csv
    collisions: pd.DataFrame = field(default_factory=pd.DataFrame)  # token_collisions.csv
    medians: pd.DataFrame = field(default_factory=pd.DataFrame)  # median_ranks.parquet
    anova: pd.DataFrame = field(default_factory=pd.DataFrame)  # anova.csv
    posthocs: pd.DataFrame = field(default_factory=pd.DataFrame)  # anova_posthocs.csv
    top_tokens: pd.DataFrame = field(default_factory=pd.DataFrame)  # top_tokens.csv
    contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # pair_contrasts.csv
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_recovery.csv
    planted_ranks: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted_ranks.csv
    planted_losses: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Setup:
    """What every step needs: resolved models and pairs, the prompts, the corpus labels."""

    params: Params
    specs: dict[str, ModelSpec]
    families: dict[str, str]
    pairs: list[tuple[str, str]]
    device: str
    prompts: dict[str, str]  # prompt_id -> text, in the order of params.prompts
    framing: dict[str, str]  # prompt_id -> positive/negative
    labels: pd.DataFrame  # corpus, word, category, subcategory
    tokenizers: dict[str, Any] = field(default_factory=dict)


@dataclass
class _LogProbs:
    """The per-model outputs of the engines."""

    words: pd.DataFrame  # word log-probs of every model, stacked
    variants: pd.DataFrame  # log-probs of the contrast variants (exact texts)
    next_token: dict[str, torch.Tensor]  # full next-token log-probs per model


def _setup(params: Params, record: RunRecord) -> _Setup:
    """Resolve models, pairs, device and prompts; read the corpus labels from the corpora run."""
    import torch

    if params.threads:
        torch.set_num_threads(int(params.threads))
    device = params.device if params.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    specs = params.specs()
    families = {m: s.family for m, s in specs.items()}
    table = prompt_table(params.prompts)
    record.add_inputs(prompts_checksum())
    corpora, sums = read_corpora_table(params.corpora_input(), params.results_root, params.corpora)
    record.add_inputs(sums)
    record.seeds.setdefault("seed", int(params.seed))
    return _Setup(
        params=params,
        specs=specs,
        families=families,
        pairs=resolve_pairs(params.models, params.pairs, families),
        device=device,
        prompts=dict(zip(table["prompt_id"], table["text"], strict=True)),
        framing=dict(zip(table["prompt_id"], table["framing"], strict=True)),
        labels=labels_of(corpora, params.corpora),
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
    """Next-token distributions and word log-probs of every model, one model in memory at a time."""
    p = setup.params
    words = list(dict.fromkeys(setup.labels["word"]))
    variants = contrast_variants(*p.contrast)
    variant_texts = list(dict.fromkeys([*variants["text_a"], *variants["text_b"]]))
    word_frames, variant_frames, next_tok, model_rows = [], [], {}, []
    for m in p.models:
        spec = setup.specs[m]
        fmt = resolve_prompt_format(spec, p.format_of(m))
        with record.timed(f"load {m}"), quiet_transformers():
            eng = LogProbEngine.from_registry(
                spec, prompt_format=fmt, device=setup.device, batch_size=p.batch_size
            )
        record.add_model(**model_info(spec), **eng.describe())
        model_rows.append({"model": m, "family": setup.families[m], "type": spec.type, **eng.describe()})
        with record.timed(f"next-token log-probs {m}"):
            next_tok[m] = eng.next_token_logprobs(setup.prompts)
        with record.timed(f"word log-probs {m}"):
            word_frames.append(eng.word_logprobs(setup.prompts, words, p.include_end_of_turn))
            variant_frames.append(
                eng.word_logprobs(setup.prompts, variant_texts, p.include_end_of_turn, separator="")
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
    )


def _implicit_rewards(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """Word-level rewards of every pair; token-level rewards on each pair's aligned vocabulary."""
    p = setup.params
    alignments: dict[tuple[str, str], VocabAlignment] = {}
    if any(m in TOKEN_METRICS for m in p.metrics):
        with record.timed("align vocabularies"):
            for a, b in setup.pairs:
                alignments[(a, b)] = align_vocabularies(setup.tokenizers[a], setup.tokenizers[b], a, b)
    with record.timed("implicit rewards"):
        res.word_rewards = (
            word_rewards(lp.words, setup.pairs) if setup.pairs else pd.DataFrame(columns=WORD_PAIR_COLUMNS)
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


def _ranks_and_anova(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """Median ranks of every scorer and metric, the ANOVA, the top tokens and the word-pair contrast."""
    p, labels, wr = setup.params, setup.labels, res.word_rewards
    with record.timed("median ranks and ANOVA"):
        parts = [median_ranks(scores_table(lp.words, labels, "logprob", family=setup.families), "word_sum")]
        if "word_mean" in p.metrics:
            table = scores_table(lp.words, labels, "logprob_mean", family=setup.families)
            parts.append(median_ranks(table, "word_mean"))
        for metric in ("word_mwlr", "word_logratio"):
            if metric in p.metrics and len(wr):
                parts.append(median_ranks(scores_table(wr, labels, metric.split("_", 1)[1], "pair"), metric))
        res.medians = pd.concat(parts, ignore_index=True)
        if len(p.models) >= 2:
            res.anova, res.posthocs = lm_anova(res.medians, p.models)
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


def _planted_validation(setup: _Setup, lp: _LogProbs, res: Results, record: RunRecord) -> None:
    """Fine-tune a copy of ``planted_model`` towards the planted words; ask each metric to find them."""
    import torch

    p = setup.params
    if not p.planted_model:
        return
    with record.timed("planted-word validation"):
        spec = get_spec(p.planted_model, extra=p.extra_registry)
        fmt = resolve_prompt_format(spec, p.format_of(p.planted_model))
        with quiet_transformers():
            ref = LogProbEngine.from_registry(
                spec, prompt_format=fmt, device=setup.device, batch_size=p.batch_size
            )
        train = list(prompt_table(p.planted_train_prompts)["text"])
        eval_prompts = {k: v for k, v in setup.prompts.items() if k not in set(p.planted_train_prompts)}
        torch.manual_seed(int(p.seed))
        tuned_model, res.planted_losses = plant_words(
            ref.model,
            ref.tokenizer,
            train,
            p.planted_words,
            fmt,
            p.planted_steps,
            float(p.planted_lr),
            int(p.seed),
        )
        tuned = LogProbEngine(
            tuned_model,
            ref.tokenizer,
            name=f"{spec.name}+planted",
            prompt_format=fmt,
            batch_size=p.batch_size,
        )
        # candidates: the words of the first corpus (the Big Two nouns by default) plus the planted words
        labels = setup.labels
        cand = list(dict.fromkeys(labels.loc[labels["corpus"] == p.corpora[0], "word"]))
        known = lp.words[(lp.words["model"] == spec.name) & (lp.words["prompt_format"] == fmt)]
        res.recovery, res.planted_ranks = planted_recovery(
            ref,
            tuned,
            eval_prompts,
            cand,
            p.planted_words,
            p.include_end_of_turn,
            reference_lp=known if len(known) else None,
        )
        res.recovery.insert(0, "model", spec.name)


def _word_table(setup: _Setup, lp: _LogProbs) -> pd.DataFrame:
    """The word log-probs with the words' labels and the prompts' framing (``word_logprobs.parquet``)."""
    wl = lp.words.merge(setup.labels, on="word", how="left")
    wl["framing"] = wl["prompt_id"].map(setup.framing)
    return wl


def _write(res: Results, record: RunRecord) -> None:
    """Every output table through the record, then the manifest (with the engines' work and the losses)."""
    record.extra["engine"] = res.engine_stats
    record.extra["planted_losses"] = res.planted_losses
    record.write_parquet(res.word_logprobs, "word_logprobs.parquet")
    record.write_parquet(res.word_rewards, "word_mwlr.parquet")
    record.write_parquet(res.token_rewards, "token_mwlr.parquet")
    record.write_csv(res.alignment, "token_alignment.csv")
    coll = res.collisions.copy()
    for c in ("ids", "tokens"):
        if c in coll:
            coll[c] = coll[c].map(lambda v: " ".join(map(str, v)))
    record.write_csv(coll, "token_collisions.csv")
    record.write_parquet(res.medians, "median_ranks.parquet")
    record.write_csv(res.anova, "anova.csv")
    record.write_csv(res.posthocs, "anova_posthocs.csv")
    record.write_csv(res.top_tokens, "top_tokens.csv")
    record.write_csv(res.contrasts, "pair_contrasts.csv")
    record.write_csv(res.recovery, "planted_recovery.csv")
    record.write_csv(res.planted_ranks, "planted_ranks.csv")
    record.finish()
    res.timings = dict(record.timings)


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: log-probs of every model, implicit rewards of every pair, analyses, validation, outputs."""
    record = record or RunRecord.for_params(params)
    res = Results(params=params, output_dir=str(record.output_dir))
    setup = _setup(params, record)
    _check_tokenizers(setup, record)
    lp = _model_logprobs(setup, res, record)
    _implicit_rewards(setup, lp, res, record)
    _ranks_and_anova(setup, lp, res, record)
    _planted_validation(setup, lp, res, record)
    res.word_logprobs = _word_table(setup, lp)
    _write(res, record)
    return res
