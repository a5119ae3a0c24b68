"""The paper's Fig. 2 analysis: corpus words that are ONE token in both tokenizers of a model pair.

A word's probability as an answer is the product of its tokens' probabilities, so ranking words by their
summed log-probability partly ranks them by how many tokens each tokenizer spends on them. The paper avoids
this by ranking only the words that are a single token in both vocabularies of a pair, matched by their exact
decoded string. Here:

* **the answer string** is the word as it stands as the answer under the model's prompt format, the same text
  the log-prob engine scores: the bare word in the chat format (the answer starts the assistant turn, e.g.
  ``freedom`` after ``<|im_start|>assistant\\n``), the word after one space in the raw format (a continuation
  of the prompt's text, e.g. ``" freedom"``, one ``▁freedom`` token in Gemma's vocabulary). So the
  leading-space form counts exactly where the engine's in-context tokenization puts a space.
* **single token** (:func:`single_token_words`): the answer string is tokenized in context
  (:func:`rmvalues.engine.inputs.word_candidates`) under every prompt, and it is one token, the same id
  under every prompt, whose decoded string (:func:`.metrics.token_strings`) is exactly the answer string.
  To stay cheap, the chapter checks every word under the first prompt and then re-checks under every prompt
  the words that can survive (one token under both models of a pair under the first prompt;
  :func:`verify_survivors`): exact for the survivors, and the ``n_prompts_checked`` column says which words
  were checked under one prompt only.
  The table also says whether the *other* form (leading space in chat, bare in raw) would be one token, so
  the chapter can say how much the choice matters.
* **duplicates**: when several ids of a tokenizer decode to the answer string, the word's log-prob is the
  maximum over them (``duplicates="max"``, the paper's rule) or the log of their summed probabilities
  (``"sum"``) (:func:`.metrics.collapse_logprobs`).
* **a word survives** for a pair when it is a single token under both models (:func:`pair_survivors`); its
  log-prob per prompt is read off the full next-token distribution (:func:`single_token_logprobs`), so every
  prompt costs one forward pass per model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...engine.inputs import RAW_SEPARATOR, build_split, word_candidates
from .metrics import DUPLICATE_RULES, collapse_logprobs, token_strings

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MODEL_WORD_COLUMNS",
    "PAIR_WORD_COLUMNS",
    "answer_text",
    "pair_survivors",
    "single_token_logprobs",
    "single_token_words",
    "survivor_counts",
    "verify_survivors",
]

#: Columns of :func:`single_token_words` (one row per model and word).
MODEL_WORD_COLUMNS = [
    "model",
    "prompt_format",
    "word",
    "answer",
    "n_tokens",
    "single_token",
    "token_id",
    "token",
    "n_ids",
    "ids",
    "other_form",
    "other_form_single",
    "n_prompts_checked",
]
#: Columns of :func:`pair_survivors` (one row per pair, corpus and labelled word).
PAIR_WORD_COLUMNS = [
    "pair",
    "model_p",
    "model_q",
    "corpus",
    "word",
    "category",
    "subcategory",
    "answer_p",
    "answer_q",
    "n_tokens_p",
    "n_tokens_q",
    "n_ids_p",
    "n_ids_q",
    "survives",
    "other_form_single_p",
    "other_form_single_q",
    "n_prompts_checked_p",
    "n_prompts_checked_q",
]


def answer_text(word: str, prompt_format: str) -> str:
    """The word as the model sees it as the answer: bare in the chat format, after one space in raw."""
    return word if prompt_format == "chat" else RAW_SEPARATOR + word


def _other_form(word: str, prompt_format: str) -> str:
    return RAW_SEPARATOR + word if prompt_format == "chat" else word


def single_token_words(
    tokenizer: PreTrainedTokenizerBase,
    prompt_format: str,
    prompts: Mapping[str, str],
    words: Sequence[str],
    model: str = "model",
) -> pd.DataFrame:
    """Which ``words`` are one token as answers of ``model`` (:data:`MODEL_WORD_COLUMNS`; see the module
    docstring). ``n_tokens`` is the largest in-context token count over the prompts; ``ids`` every id whose
    decoded string is the answer string (``n_ids`` > 1: duplicates); ``other_form_single`` whether the other
    form (leading space in chat, bare in raw) is one vocabulary string of this tokenizer."""
    words = list(dict.fromkeys(words))
    strings = token_strings(tokenizer)
    by_string: dict[str, list[int]] = {}
    for i, s in enumerate(strings):
        if s is not None:
            by_string.setdefault(s, []).append(i)
    answers = [answer_text(w, prompt_format) for w in words]
    seen: list[set[tuple[int, ...]]] = [set() for _ in words]
    contextual = [True] * len(words)
    for pid, text in prompts.items():
        split = build_split(tokenizer, text, prompt_format, pid)
        for k, cand in enumerate(word_candidates(tokenizer, split, answers)):
            seen[k].add(cand.ids)
            contextual[k] = contextual[k] and cand.how == "in-context"
    rows = []
    for k, (w, a) in enumerate(zip(words, answers, strict=True)):
        n_tok = max(len(ids) for ids in seen[k])
        ids = by_string.get(a, [])
        only = next(iter(seen[k])) if len(seen[k]) == 1 else ()
        single = contextual[k] and len(only) == 1 and strings[only[0]] == a
        other = _other_form(w, prompt_format)
        rows.append(
            {
                "model": model,
                "prompt_format": prompt_format,
                "word": w,
                "answer": a,
                "n_tokens": n_tok,
                "single_token": bool(single),
                "token_id": int(only[0]) if single else -1,
                "token": tokenizer.convert_ids_to_tokens(int(only[0])) if single else "",
                "n_ids": len(ids) if single else 0,
                "ids": ids if single else [],
                "other_form": other,
                "other_form_single": other in by_string,
                "n_prompts_checked": len(prompts),
            }
        )
    return pd.DataFrame(rows, columns=MODEL_WORD_COLUMNS)


def verify_survivors(
    per_model: pd.DataFrame,
    tokenizers: Mapping[str, PreTrainedTokenizerBase],
    formats: Mapping[str, str],
    prompts: Mapping[str, str],
    pairs: Sequence[tuple[str, str]],
) -> pd.DataFrame:
    """Re-check under every prompt the words that can survive: for each model, the words one token under it
    and under a pair partner in ``per_model`` (:func:`single_token_words` of every model, stacked, checked
    under fewer prompts). Their rows are replaced; the other rows are kept."""
    single = {m: set(g.loc[g["single_token"], "word"]) for m, g in per_model.groupby("model")}
    frames = []
    for m, grp in per_model.groupby("model", sort=False):
        partners = {b for a, b in pairs if a == m} | {a for a, b in pairs if b == m}
        wanted = sorted(
            set().union(*[single[m] & single.get(o, set()) for o in partners]) if partners else set()
        )
        if not wanted:
            frames.append(grp)
            continue
        fresh = single_token_words(tokenizers[m], formats[m], prompts, wanted, m)
        frames.append(
            pd.concat([grp[~grp["word"].isin(wanted)], fresh])
            .set_index("word")
            .loc[grp["word"]]
            .reset_index()
        )
    return pd.concat(frames, ignore_index=True)[MODEL_WORD_COLUMNS]


def pair_survivors(
    per_model: pd.DataFrame, labels: pd.DataFrame, pairs: Sequence[tuple[str, str]], label: Any
) -> pd.DataFrame:
    """Per pair, every labelled word with its token counts under both models and whether it survives (one
    token under both): :data:`PAIR_WORD_COLUMNS`. ``per_model``: :func:`single_token_words` of every model
    stacked; ``labels``: ``corpus, word, category, subcategory``; ``label(p, q)`` names the pair.
    ``other_form_single_p/q``: whether the other answer form is one token (the choice's sensitivity)."""
    frames = []
    cols = ["word", "answer", "n_tokens", "n_ids", "single_token", "other_form_single", "n_prompts_checked"]
    for p, q in pairs:
        a = per_model.loc[per_model["model"] == p, cols]
        b = per_model.loc[per_model["model"] == q, cols]
        m = labels[["corpus", "word", "category", "subcategory"]].merge(
            a.merge(b, on="word", suffixes=("_p", "_q")), on="word", how="inner"
        )
        m["survives"] = m["single_token_p"] & m["single_token_q"]
        m["pair"], m["model_p"], m["model_q"] = label(p, q), p, q
        frames.append(m)
    if not frames:
        return pd.DataFrame(columns=PAIR_WORD_COLUMNS)
    return pd.concat(frames, ignore_index=True)[PAIR_WORD_COLUMNS]


def survivor_counts(survivors: pd.DataFrame) -> pd.DataFrame:
    """Words per pair, corpus and category: ``n_words``, ``n_single_p``, ``n_single_q``, ``n_survive``
    (pooled over subcategories; a word labelled twice counts in each of its categories)."""
    if survivors.empty:
        return pd.DataFrame(
            columns=["pair", "corpus", "category", "n_words", "n_single_p", "n_single_q", "n_survive"]
        )
    df = survivors.drop_duplicates(["pair", "corpus", "category", "word"]).copy()
    df["single_p"] = df["n_tokens_p"] == 1
    df["single_q"] = df["n_tokens_q"] == 1
    return (
        df.groupby(["pair", "corpus", "category"], sort=False)
        .agg(
            n_words=("word", "size"),
            n_single_p=("single_p", "sum"),
            n_single_q=("single_q", "sum"),
            n_survive=("survives", "sum"),
        )
        .reset_index()
    )


def single_token_logprobs(
    next_token: torch.Tensor,
    per_model: pd.DataFrame,
    prompt_ids: Sequence[str],
    words: Sequence[str],
    duplicates: str = "max",
) -> pd.DataFrame:
    """Log-probs of single-token ``words`` from one model's next-token distributions ``(n_prompts, vocab)``
    (rows in the order of ``prompt_ids``): ``model, prompt_id, word, logprob``. A word's ids (its
    duplicates) are combined by ``duplicates`` (:func:`.metrics.collapse_logprobs`)."""
    import torch

    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates={duplicates!r}; valid: {', '.join(DUPLICATE_RULES)}")
    info = per_model.set_index("word")
    words = list(dict.fromkeys(words))
    bad = [w for w in words if w not in info.index or not info.loc[w, "single_token"]]
    if bad:
        raise ValueError(f"not single-token words of {per_model['model'].iloc[0]!r}: {bad[:5]}")
    if next_token.shape[0] != len(prompt_ids):
        raise ValueError(f"{next_token.shape[0]} distributions for {len(prompt_ids)} prompts")
    group = torch.full((next_token.shape[1],), -1, dtype=torch.long)
    for k, w in enumerate(words):
        group[torch.as_tensor(info.loc[w, "ids"], dtype=torch.long)] = k
    lp = collapse_logprobs(next_token, group, len(words), duplicates).numpy()
    return pd.DataFrame(
        {
            "model": per_model["model"].iloc[0],
            "prompt_id": np.repeat(list(prompt_ids), len(words)),
            "word": np.tile(words, len(prompt_ids)),
            "logprob": lp.reshape(-1),
        }
    )
