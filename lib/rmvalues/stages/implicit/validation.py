"""Metric validation with planted words: which implicit-reward metric finds a known, planted preference.

A copy of a model is fine-tuned briefly to answer the prompts with a handful of planted words
(:func:`plant_words`); each metric then ranks the candidates by the implicit reward of the tuned model against
its reference, and the recovery of the planted words (R-precision, AUC, mean and median rank;
:func:`recovery_scores`) says which metric finds them (:func:`planted_recovery`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...engine.inputs import TemplateSplit, end_of_turn_ids
from ...engine.logprobs import LogProbEngine
from .metrics import log_ratio, mwlr, require_same_tokenizer, token_strings

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["RECOVERY_COLUMNS", "WORD_METRICS", "plant_words", "planted_recovery", "recovery_scores"]

#: Columns of the recovery table (:func:`planted_recovery`).
RECOVERY_COLUMNS = [
    "level",
    "metric",
    "n_candidates",
    "n_planted",
    "r_precision",
    "auc",
    "mean_rank_planted",
    "median_rank_planted",
]
#: The word-level metrics of the validation (tuned vs reference; ``word_sum``/``word_mean`` of the tuned model).
WORD_METRICS = ("word_logratio", "word_mwlr", "word_sum", "word_mean")


# -- the planted-word fine-tune -------------------------------------------------------------------------------


def _answer_rows(
    engine: LogProbEngine,
    prompts: Sequence[str],
    words: Sequence[str],
    include_end_of_turn: bool,
) -> list[tuple[TemplateSplit, list[list[int]]]]:
    """Per training prompt: its split and the token ids of every planted answer (plus end-of-turn)."""
    out = []
    for i, prompt in enumerate(prompts):
        sp = engine.split(prompt, f"train{i}")
        end = list(end_of_turn_ids(engine.tokenizer, sp)) if include_end_of_turn else []
        out.append((sp, [list(c.ids) + end for c in engine.word_candidates(sp, list(words))]))
    return out


def _answer_nll(
    engine: LogProbEngine, batches: list[tuple[TemplateSplit, list[list[int]]]]
) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of every answer token (with gradient) and the number of tokens.

    Each prompt is encoded once (:meth:`LogProbEngine.prefix`, gradients on) and its keys/values are shared
    by all its answers (:meth:`LogProbEngine.continuation_logits`)."""
    import torch

    total = torch.zeros((), device=engine.device)
    n_tok = 0
    for sp, rows in batches:
        prefix = engine.prefix(sp.prefix_ids)
        first_lp = prefix.first_logprobs
        dev = first_lp.device
        total = total - first_lp[torch.tensor([r[0] for r in rows], device=dev)].sum()
        n_tok += len(rows)
        longer = [r for r in rows if len(r) > 1]
        if longer:
            logits, lse = engine.continuation_logits(prefix, [r[:-1] for r in longer])
            for i, r in enumerate(longer):
                tgt = torch.tensor(r[1:], device=dev)
                pos = torch.arange(len(r) - 1, device=dev)
                total = total - (logits[i, pos, tgt] - lse[i, pos]).sum()
                n_tok += len(r) - 1
    return total, n_tok


def plant_words(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    words: Sequence[str],
    prompt_format: str = "chat",
    steps: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
    include_end_of_turn: bool = True,
) -> tuple[PreTrainedModel, list[float]]:
    """A copy of ``model`` fine-tuned briefly to answer every prompt with the planted ``words``.

    Supervised fine-tuning with AdamW on all (prompt, word) pairs, full batch, ``steps`` steps; the loss is
    the mean negative log-likelihood of the answer tokens (the word, plus the end-of-turn token when
    ``include_end_of_turn``), built with the same token-exact construction as the log-prob engine. To stay
    cheap on a CPU each prompt is encoded once per step and its keys/values are shared (expanded, with
    gradient) by all its answers, which gives the same gradient as encoding every (prompt, answer) sequence
    separately. Returns the tuned copy (eval mode; ``model`` is untouched) and the loss before each step.
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps={steps}: give at least one training step")
    if not words or not prompts:
        raise ValueError("plant_words needs at least one prompt and one word")
    tuned = copy.deepcopy(model)
    engine = LogProbEngine(tuned, tokenizer, name="tuned", prompt_format=prompt_format)
    batches = _answer_rows(engine, prompts, words, include_end_of_turn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        losses: list[float] = []
        for _ in range(steps):
            tuned.eval()  # no dropout; gradients still flow
            opt.zero_grad()
            total, n_tok = _answer_nll(engine, batches)
            loss = total / n_tok
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
    tuned.eval()
    return tuned, losses


# -- recovery -------------------------------------------------------------------------------------------------


def recovery_scores(values: pd.Series, planted: set[Any], level: str, metric: str) -> dict[str, Any]:
    """How well ranking ``values`` (index = candidates, higher = more reward) recovers ``planted``:
    R-precision (share of the planted among the top ``len(planted)``), AUC (probability that a planted
    candidate outranks a non-planted one, ties half) and the planted candidates' mean and median rank."""
    from scipy.stats import rankdata

    values = values.astype(float)
    is_planted = values.index.isin(list(planted))
    n_pl = int(is_planted.sum())
    if n_pl == 0 or n_pl == len(values):
        raise ValueError("recovery needs planted and non-planted candidates")
    rank = rankdata(-values.to_numpy(), method="average")
    top = rankdata(-values.to_numpy(), method="ordinal") <= n_pl
    r_up = rankdata(values.to_numpy(), method="average")
    auc = (r_up[is_planted].sum() - n_pl * (n_pl + 1) / 2) / (n_pl * (len(values) - n_pl))
    return {
        "level": level,
        "metric": metric,
        "n_candidates": len(values),
        "n_planted": n_pl,
        "r_precision": float((top & is_planted).sum() / n_pl),
        "auc": float(auc),
        "mean_rank_planted": float(rank[is_planted].mean()),
        "median_rank_planted": float(np.median(rank[is_planted])),
    }


def _reference_word_logprobs(
    reference: LogProbEngine,
    prompts: Mapping[str, str],
    cands: list[str],
    include_end_of_turn: bool,
    known: pd.DataFrame | None,
) -> pd.DataFrame:
    """The reference model's word log-probs of ``cands``: reused from ``known`` where it has them (every
    prompt), computed for the rest."""
    if known is not None:
        have = known[known["prompt_id"].isin(list(prompts)) & known["word"].isin(cands)]
        have = have.drop_duplicates(["prompt_id", "word"])
        missing = [w for w in cands if (have["word"] == w).sum() < len(prompts)]
        if not missing:
            return have
        if len(missing) < len(cands):
            return pd.concat(
                [
                    have[~have["word"].isin(missing)],
                    reference.word_logprobs(prompts, missing, include_end_of_turn),
                ],
                ignore_index=True,
            )
    return reference.word_logprobs(prompts, cands, include_end_of_turn)


def _word_recovery(
    ref_lp: pd.DataFrame, tun_lp: pd.DataFrame, planted: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Recovery rows and planted-word ranks of the word-level metrics (means over the prompts)."""
    m = ref_lp.merge(tun_lp, on=["prompt_id", "word"], suffixes=("_p", "_q"))
    m["word_logratio"] = log_ratio(m["logprob_p"], m["logprob_q"])
    m["word_mwlr"] = mwlr(m["logprob_p"].to_numpy(), m["logprob_q"].to_numpy())
    m["word_sum"] = m["logprob_q"]
    m["word_mean"] = m["logprob_mean_q"]
    means = m.groupby("word")[list(WORD_METRICS)].mean()
    rows, ranks = [], []
    for metric in WORD_METRICS:
        rows.append(recovery_scores(means[metric], set(planted), "word", metric))
        r = means[metric].rank(ascending=False, method="average")
        ranks += [{"level": "word", "metric": metric, "word": w, "rank": float(r[w])} for w in planted]
    return rows, ranks


def _token_recovery(
    reference: LogProbEngine, tuned: LogProbEngine, prompts: Mapping[str, str], planted: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Recovery rows, planted-word ranks and the number of candidates of the token-level metrics: the whole
    (alignable) vocabulary ranked; the planted units are the planted words' first tokens."""
    import torch

    require_same_tokenizer(reference.tokenizer, tuned.tokenizer, reference.name, tuned.name)
    lp_p = reference.next_token_logprobs(prompts)
    lp_q = tuned.next_token_logprobs(prompts)
    strings = token_strings(reference.tokenizer)
    n = min(lp_p.shape[1], len(strings))
    ok = np.array([s is not None for s in strings[:n]])
    first_ids = {}
    for w in planted:
        sp = reference.split(next(iter(prompts.values())), next(iter(prompts)))
        first_ids[w] = reference.word_candidates(sp, [w])[0].ids[0]
    planted_ids = set(first_ids.values())
    with torch.no_grad():
        tok_metrics = {
            "token_logratio": (lp_q[:, :n] - lp_p[:, :n]).mean(0).numpy(),
            "token_mwlr": mwlr(lp_p[:, :n], lp_q[:, :n]).mean(0).numpy(),
            "token_logprob": lp_q[:, :n].mean(0).numpy(),
        }
    ids = np.flatnonzero(ok)
    rows, ranks = [], []
    for metric, vals in tok_metrics.items():
        s = pd.Series(vals[ids], index=ids)
        rows.append(recovery_scores(s, planted_ids, "token", metric))
        r = s.rank(ascending=False, method="average")
        ranks += [
            {"level": "token", "metric": metric, "word": w, "rank": float(r.get(i, np.nan))}
            for w, i in first_ids.items()
        ]
    return rows, ranks, len(ids)


def planted_recovery(
    reference: LogProbEngine,
    tuned: LogProbEngine,
    prompts: Mapping[str, str],
    candidates: Sequence[str],
    planted: Sequence[str],
    include_end_of_turn: bool = False,
    reference_lp: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which implicit-reward metric recovers the planted words (:data:`RECOVERY_COLUMNS`, one row per level
    and metric) and the planted words' ranks (``level, metric, word, rank, n_candidates``).

    Word level: the candidates (planted words included) ranked by each metric's mean over ``prompts``
    (``word_logratio``, ``word_mwlr`` of tuned vs reference; ``word_sum``, ``word_mean`` of the tuned model).
    Token level: the whole vocabulary ranked by ``token_logratio``, ``token_mwlr`` and the tuned model's
    ``token_logprob``; the planted units are the planted words' first tokens. ``reference_lp``: the reference
    model's word log-probs computed already (same prompt format and end-of-turn setting); the (prompt, word)
    pairs it lacks are computed.
    """
    cands = list(dict.fromkeys([*candidates, *planted]))
    ref_lp = _reference_word_logprobs(reference, prompts, cands, include_end_of_turn, reference_lp)
    tun_lp = tuned.word_logprobs(prompts, cands, include_end_of_turn)
    rows, ranks = _word_recovery(ref_lp, tun_lp, planted)
    tok_rows, tok_ranks, n_tokens = _token_recovery(reference, tuned, prompts, planted)
    n_cands = {"word": len(cands), "token": n_tokens}
    rk = pd.DataFrame(ranks + tok_ranks)
    rk["n_candidates"] = rk["level"].map(n_cands)
    return pd.DataFrame(rows + tok_rows)[RECOVERY_COLUMNS], rk
