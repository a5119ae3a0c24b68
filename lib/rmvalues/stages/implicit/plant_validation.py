"""The planted-word validation of the chapter run: choose the planted and sham words, fine-tune, score, judge.

:func:`choose_words` (before the models run, so every model also scores the validation's words) fixes the
planted words, draws the sham words (:func:`.plant_finetune.sham_words`: single words of matched Zipf frequency
from the corpora other than the first (all corpora when there is no other), not of a planted word's
category there, whose first token is no planted word's first token) and the candidates (the first corpus's
words, planted and sham words removed). :func:`validate` fine-tunes two copies of the
planted model (planted words, sham words; same prompts, steps, learning rate and seed) and evaluates every
metric in the three conditions of :mod:`.validation`:

* ``word``: the candidates and the planted words under the evaluation word prompts (``word_prompts`` minus the
  training prompts), reference = the untuned planted model;
* ``word (cross-tokenizer)``: the same, against a reference of another family (``planted_cross_model``): the
  tuned model's word log-probs against, e.g., Gemma's, as the paper compares models across tokenizers;
* ``token``: the whole alignable vocabulary under the evaluation prompts (``prompts`` minus the training
  prompts); the planted units are the planted words' first tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...core.manifest import RunRecord
from ...data.norms import zipf_frequencies
from ...data.prompts import prompt_table
from ...engine.inputs import build_split, resolve_prompt_format, word_candidates
from ...engine.logprobs import LogProbEngine
from ...models.loading import load_tokenizer, quiet_transformers
from ...models.registry import ModelSpec, get_spec
from .graded import detection_rows, metric_differences
from .metrics import token_strings
from .params import Params
from .plant_finetune import plant_words, sham_words
from .single_token import answer_text
from .validation import WORD_METRICS, Panel, evaluate_panels, metric_contrasts, token_panels, word_panels

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Outcome", "Plan", "choose_words", "validate"]


@dataclass
class Plan:
    """The validation's words: planted and sham words (``table``: ``planted_words.csv``), the candidates,
    and each planted and sham word's first token id under the planted model."""

    model: str
    spec: ModelSpec
    prompt_format: str
    planted: list[str]
    sham: list[str]
    candidates: list[str]
    first_ids: dict[str, int]
    table: pd.DataFrame

    def words(self) -> list[str]:
        """The words every model scores for the validation (planted, then sham)."""
        return [*self.planted, *self.sham]


@dataclass
class Outcome:
    """The validation's tables (planted words, recovery, ranks, pass criterion, metric contrasts) and the
    training losses."""

    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]
    planted_losses: list[float]
    sham_losses: list[float]
    graded: pd.DataFrame  # the graded validation's detection per level, metric and strength
    graded_differences: pd.DataFrame  # its metric comparisons per level and strength
    graded_losses: pd.DataFrame  # strength, condition, step, loss


def _first_ids(tokenizer: Any, fmt: str, prompt: tuple[str, str], words: list[str]) -> dict[str, int]:
    split = build_split(tokenizer, prompt[1], fmt, prompt[0])
    cands = word_candidates(tokenizer, split, [answer_text(w, fmt) for w in words])
    return {w: int(c.ids[0]) for w, c in zip(words, cands, strict=True)}


def choose_words(
    params: Params,
    corpora: pd.DataFrame,
    labels: pd.DataFrame,
    specs: Mapping[str, ModelSpec],
    word_prompts: Mapping[str, str],
    record: RunRecord,
) -> Plan | None:
    """The validation's words (``None`` when ``planted_model`` is ``''``); see the module docstring."""
    p = params
    if not p.planted_model:
        return None
    with record.timed("planted and sham words"):
        spec = specs.get(p.planted_model) or get_spec(p.planted_model, extra=p.extra_registry)
        fmt = resolve_prompt_format(spec, p.format_of(p.planted_model))
        tok = load_tokenizer(spec)
        planted = list(p.planted_words)
        words = corpora.drop_duplicates("word").set_index("word")
        known = words["zipf_frequency"].to_dict()
        missing = [w for w in planted if w not in known]
        known.update(zipf_frequencies(missing).to_dict() if missing else {})
        # the sham pool: single words of the other corpora (so the candidates stay the first corpus's words)
        # where there are others, not of a planted word's category there
        first_corpus = set(corpora.loc[corpora["corpus"] == p.corpora[0], "word"])
        others = corpora[(corpora["corpus"] != p.corpora[0]) & ~corpora["word"].isin(first_corpus)]
        source = others if others["word"].nunique() >= 5 * len(planted) else corpora
        cats = set(source.loc[source["word"].isin(planted), "category"])
        single = (source["n_words"] == 1) & source["word"].str.fullmatch(r"[a-z]+")
        pool = source[single & ~source["category"].isin(cats)].drop_duplicates("word")
        prompt = next(iter(word_prompts.items()))
        firsts = _first_ids(tok, fmt, prompt, [*planted, *pool["word"]])
        clash = {w for w in pool["word"] if firsts[w] in {firsts[x] for x in planted}}
        seed = int(p.seed)
        table = sham_words(planted, [known[w] for w in planted], pool, exclude=sorted(clash), seed=seed)
        rest = corpora[corpora["corpus"] != p.corpora[0]].drop_duplicates("word").set_index("word")
        cat_of = {**words["category"].to_dict(), **rest["category"].to_dict()}  # the label outside the first
        table.loc[table["role"] == "planted", "category"] = [cat_of.get(w, "") for w in planted]
        sham = list(table.loc[table["role"] == "sham", "word"])
        table["first_token"] = [tok.convert_ids_to_tokens(firsts[w]) for w in table["word"]]
        record.seeds["sham_words"] = seed
        first = labels.loc[labels["corpus"] == p.corpora[0], "word"]
        cands = [w for w in dict.fromkeys(first) if w not in set(planted) | set(sham)]
    return Plan(
        p.planted_model, spec, fmt, planted, sham, cands, {w: firsts[w] for w in [*planted, *sham]}, table
    )


def _reference_words(
    ref: LogProbEngine, fmt: str, words_lp: pd.DataFrame, prompts: Mapping[str, str], words: list[str]
) -> pd.DataFrame:
    """The untuned model's word log-probs: from the chapter's table where it has them all, else computed."""
    have = words_lp[
        (words_lp["model"] == ref.name)
        & (words_lp["prompt_format"] == fmt)
        & words_lp["prompt_id"].isin(list(prompts))
        & words_lp["word"].isin(words)
    ].drop_duplicates(["prompt_id", "word"])
    if len(have) == len(prompts) * len(words):
        return have
    return ref.word_logprobs(prompts, words, False)


def _next_token(
    ref: LogProbEngine,
    next_token: Mapping[str, torch.Tensor],
    all_prompts: list[str],
    prompts: Mapping[str, str],
) -> torch.Tensor:
    """The untuned model's next-token log-probs under ``prompts``: rows of the chapter's, else computed."""
    if ref.name in next_token:
        rows = [all_prompts.index(k) for k in prompts]
        return next_token[ref.name][rows]
    return ref.next_token_logprobs(prompts)


def _tune(
    plan: Plan,
    ref: LogProbEngine,
    params: Params,
    words: list[str],
    record: RunRecord,
    name: str,
    strength: tuple[int, float] | None = None,
):
    """A copy of the planted model fine-tuned towards ``words`` (the planted or the sham words), with the
    main validation's steps and learning rate or ``strength`` = (steps, learning rate)."""
    train = list(prompt_table(params.planted_train_prompts)["text"])
    steps, lr = strength or (params.planted_steps, float(params.planted_lr))
    with record.timed(f"fine-tune ({name})"):
        model, losses = plant_words(
            ref.model, ref.tokenizer, train, words, plan.prompt_format, steps, lr, int(params.seed)
        )
    eng = LogProbEngine(
        model,
        ref.tokenizer,
        name=f"{plan.model}+{name}",
        prompt_format=plan.prompt_format,
        batch_size=params.batch_size,
    )
    return eng, losses


def _panels(
    plan: Plan,
    params: Params,
    engines: Mapping[str, LogProbEngine],
    prompts: Mapping[str, str],
    word_prompts: Mapping[str, str],
    words_lp: pd.DataFrame,
    next_token: Mapping[str, torch.Tensor],
    cross: str,
) -> tuple[list[Panel], list[Panel]]:
    """The word-level panels (against the untuned model, and against ``cross``) and the token-level ones:
    every condition's log-probs under the evaluation prompts (the training prompts left out)."""
    ref = engines["untuned"]
    train = set(params.planted_train_prompts)
    w_eval = {k: v for k, v in word_prompts.items() if k not in train}
    t_eval = {k: v for k, v in prompts.items() if k not in train}
    words = [*plan.candidates, *plan.planted, *plan.sham]
    ref_lp = _reference_words(ref, plan.prompt_format, words_lp, w_eval, words)
    ref_next = _next_token(ref, next_token, list(prompts), t_eval)
    scored = {c: ref_lp if c == "untuned" else e.word_logprobs(w_eval, words) for c, e in engines.items()}
    nexts = {c: ref_next if c == "untuned" else e.next_token_logprobs(t_eval) for c, e in engines.items()}
    panels = word_panels(ref_lp, scored, list(w_eval), words, "word", plan.model)
    if cross:
        metrics = [m for m in WORD_METRICS if m in ("word_logratio", "word_mwlr")]
        cross_lp = words_lp[words_lp["model"] == cross]
        panels += word_panels(cross_lp, scored, list(w_eval), words, "word (cross-tokenizer)", cross, metrics)
    ids = [i for i, s in enumerate(token_strings(ref.tokenizer)[: ref_next.shape[1]]) if s is not None]
    return panels, token_panels(ref_next, nexts, ids, plan.model)


def _judge(
    plan: Plan, word_level: list[Panel], token_level: list[Panel], n_bootstrap: int, seed: int
) -> tuple[pd.DataFrame, ...]:
    """Recovery, ranks, the pass criterion and the metric contrasts of both levels, stacked."""
    same = {w: w for w in plan.planted}, {w: w for w in plan.sham}
    first = {w: plan.first_ids[w] for w in plan.planted}, {w: plan.first_ids[w] for w in plan.sham}
    words_out = evaluate_panels(word_level, *same, n_bootstrap=n_bootstrap, seed=seed)
    tokens_out = evaluate_panels(token_level, *first, n_bootstrap=n_bootstrap, seed=seed)
    tables = [pd.concat([a, b], ignore_index=True) for a, b in zip(words_out, tokens_out, strict=True)]
    tables.append(
        pd.concat(
            [
                metric_contrasts(word_level, *same, n_bootstrap=n_bootstrap, seed=seed),
                metric_contrasts(token_level, *first, n_bootstrap=n_bootstrap, seed=seed),
            ],
            ignore_index=True,
        )
    )
    for t in tables:
        t.insert(0, "model", plan.model)
    return tuple(tables)


def validate(
    plan: Plan,
    params: Params,
    prompts: Mapping[str, str],
    word_prompts: Mapping[str, str],
    words_lp: pd.DataFrame,
    next_token: Mapping[str, torch.Tensor],
    families: Mapping[str, str],
    device: str,
    record: RunRecord,
) -> Outcome:
    """Fine-tune (planted, sham), score the three conditions at every level, evaluate the pass criterion."""
    p = params
    with record.timed("load planted model"), quiet_transformers():
        ref = LogProbEngine.from_registry(
            plan.spec, prompt_format=plan.prompt_format, device=device, batch_size=p.batch_size
        )
    tuned, planted_losses = _tune(plan, ref, p, plan.planted, record, "planted")
    sham, sham_losses = _tune(plan, ref, p, plan.sham, record, "sham")
    engines = {"planted": tuned, "untuned": ref, "sham": sham}
    with record.timed("validation log-probs"):
        args = (prompts, word_prompts, words_lp, next_token, p.cross_model(families))
        word_level, token_level = _panels(plan, p, engines, *args)
    with record.timed("validation statistics"):
        record.seeds["validation_bootstrap"] = int(p.seed)
        rec, ranks, passes, contrasts = _judge(
            plan, word_level, token_level, p.planted_bootstrap, int(p.seed)
        )
    main = {"planted": (tuned, planted_losses), "sham": (sham, sham_losses)}
    del tuned, sham, engines
    graded, differences, losses = _graded(plan, p, ref, prompts, next_token, record, main)
    return Outcome(
        (plan.table, rec, ranks, passes, contrasts), planted_losses, sham_losses, graded, differences, losses
    )


def _graded_panels(
    plan: Plan,
    engines: Mapping[str, LogProbEngine],
    word_eval: Mapping[str, str],
    token_eval: Mapping[str, str],
    reference: tuple[pd.DataFrame, torch.Tensor],
) -> list[list[Panel]]:
    """The graded validation's panels of one strength: the word level (every word metric, against the
    untuned model) and the token level; ``reference``: the untuned model's word and next-token log-probs."""
    words = [*plan.candidates, *plan.planted, *plan.sham]
    ref_lp, ref_next = reference
    scored = {c: e.word_logprobs(word_eval, words) for c, e in engines.items()}
    nexts = {c: e.next_token_logprobs(token_eval) for c, e in engines.items()}
    scored["untuned"], nexts["untuned"] = ref_lp, ref_next
    ref = next(iter(engines.values()))
    ids = [i for i, s in enumerate(token_strings(ref.tokenizer)[: ref_next.shape[1]]) if s is not None]
    return [
        word_panels(ref_lp, scored, list(word_eval), words, "word", plan.model),
        token_panels(ref_next, nexts, ids, plan.model),
    ]


def _graded(
    plan: Plan,
    params: Params,
    ref: LogProbEngine,
    prompts: Mapping[str, str],
    next_token: Mapping[str, torch.Tensor],
    record: RunRecord,
    main: dict[str, tuple[LogProbEngine, list[float]]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The graded validation (:mod:`.graded`): at every strength the plant and the sham plant, scored at the
    word level under ``planted_strength_prompts`` and at the token level under ``prompts`` (the training
    prompts left out), against the untuned model; detection rows, metric differences, training losses.
    ``main``: the main validation's tuned engines and losses by condition, reused (not retrained) at the
    strength with its steps and learning rate."""
    p = params
    if not p.planted_strengths:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    word_ids = p.strength_prompt_ids()
    word_eval = dict(zip(word_ids, prompt_table(word_ids)["text"], strict=True))
    token_eval = {k: v for k, v in prompts.items() if k not in set(p.planted_train_prompts)}
    words = [*plan.candidates, *plan.planted, *plan.sham]
    with record.timed("graded validation: untuned log-probs"):
        reference = (
            ref.word_logprobs(word_eval, words),
            _next_token(ref, next_token, list(prompts), token_eval),
        )
    units = [
        ({w: w for w in plan.planted}, {w: w for w in plan.sham}),
        ({w: plan.first_ids[w] for w in plan.planted}, {w: plan.first_ids[w] for w in plan.sham}),
    ]
    rows, diffs, losses = [], [], []
    steps = int(p.planted_strength_steps)
    reuse = steps == int(p.planted_steps)
    for strength in p.planted_strengths:
        engines = {}
        for cond, words_of in (("planted", plan.planted), ("sham", plan.sham)):
            if reuse and float(strength) == float(p.planted_lr):
                engines[cond], loss = main.pop(cond)  # the main validation's plant: the same fine-tune
            else:
                engines[cond], loss = _tune(
                    plan, ref, p, words_of, record, f"{cond}, lr {strength:g}", (steps, strength)
                )
            losses += [
                {"strength": strength, "condition": cond, "step": i, "loss": x} for i, x in enumerate(loss)
            ]
        with record.timed(f"graded validation: log-probs at lr {strength:g}"):
            level_panels = _graded_panels(plan, engines, word_eval, token_eval, reference)
        del engines, loss
        with record.timed(f"graded validation: statistics at lr {strength:g}"):
            for panels, (pl, sh) in zip(level_panels, units, strict=True):
                r, boots, points = detection_rows(
                    panels, pl, sh, strength, steps, p.planted_bootstrap, int(p.seed)
                )
                rows += r
                diffs += metric_differences(panels[0].level, strength, boots, points, p.planted_bootstrap)
    main.clear()
    return pd.DataFrame(rows), pd.DataFrame(diffs), pd.DataFrame(losses)
