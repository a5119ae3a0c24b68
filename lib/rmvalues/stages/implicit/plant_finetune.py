"""The planted-word fine-tune and its sham control.

:func:`plant_words` fine-tunes a copy of a model briefly to answer the training prompts with a handful of
planted words; :func:`sham_words` draws the sham plant's words: corpus words of matched frequency (wordfreq
Zipf) that are not planted, not candidates of the recovery, not of a planted word's category, and whose first
token differs from every planted word's, so the sham fine-tune is the same procedure aimed at other words.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...engine.inputs import TemplateSplit, end_of_turn_ids
from ...engine.logprobs import LogProbEngine

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["SHAM_COLUMNS", "ZIPF_TOLERANCE", "plant_words", "sham_words"]

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
        params = [p for p in tuned.parameters() if p.requires_grad]
        fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)  # fused: one kernel per step
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


#: The largest Zipf-frequency difference of a sham word from its planted word, where the pool has one.
ZIPF_TOLERANCE = 0.25
#: Columns of :func:`sham_words`.
SHAM_COLUMNS = ["role", "word", "zipf_frequency", "matched_to", "zipf_difference", "category"]


def sham_words(
    planted: Sequence[str],
    planted_zipf: Sequence[float],
    pool: pd.DataFrame,
    exclude: Sequence[str] = (),
    seed: int = 0,
    tolerance: float = ZIPF_TOLERANCE,
) -> pd.DataFrame:
    """One sham word per planted word, matched in frequency (:data:`SHAM_COLUMNS`, planted rows first).

    ``pool``: candidate sham words with ``word, zipf_frequency, category`` (the caller removes what must not
    be drawn). For each planted word in turn, a word is drawn uniformly (seeded) among the unused pool words
    within ``tolerance`` Zipf of it; where none is, the nearest unused word is taken. ``exclude``: words never
    drawn (on top of the planted ones)."""
    rng = np.random.default_rng(seed)
    taken = set(planted) | set(exclude)
    cand = pool[~pool["word"].isin(taken)].drop_duplicates("word").reset_index(drop=True)
    if len(cand) < len(planted):
        raise ValueError(f"the sham pool has {len(cand)} words for {len(planted)} planted words")
    used = np.zeros(len(cand), dtype=bool)
    zipf = cand["zipf_frequency"].to_numpy(float)
    rows = [
        {"role": "planted", "word": w, "zipf_frequency": float(z), "matched_to": "", "zipf_difference": 0.0}
        for w, z in zip(planted, planted_zipf, strict=True)
    ]
    for w, z in zip(planted, planted_zipf, strict=True):
        gap = np.abs(zipf - float(z))
        gap[used] = np.inf
        near = np.flatnonzero(gap <= tolerance)
        k = int(rng.choice(near)) if len(near) else int(np.argmin(gap))
        used[k] = True
        rows.append(
            {
                "role": "sham",
                "word": cand.loc[k, "word"],
                "zipf_frequency": float(zipf[k]),
                "matched_to": w,
                "zipf_difference": round(float(zipf[k] - float(z)), 6),
                "category": cand.loc[k, "category"],
            }
        )
    return pd.DataFrame(rows, columns=SHAM_COLUMNS)
