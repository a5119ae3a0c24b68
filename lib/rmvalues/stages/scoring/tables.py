"""The chapter's tables: registry facts of the scored RMs, the token-exactness checks of the inputs, category
median ranks, the top and bottom words, and the agreement of live with published scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...engine.inputs import Candidate, TemplateSplit, check_inputs, split_template, word_candidates
from ...models.loading import load_tokenizer
from ...models.registry import ModelSpec
from ...stats import contrast_reader_table
from ...stats.ranks import median_ranks, rank_scores
from .findings import BIG2, CATEGORY

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "BIG2_CATEGORY",
    "InputOverview",
    "category_medians",
    "examples_by_model",
    "framing_contrast_table",
    "input_overview",
    "live_vs_published",
    "median_table",
    "model_table",
    "top_bottom_words",
]


def model_table(specs: Sequence[ModelSpec]) -> pd.DataFrame:
    """Registry facts of the scored RMs (one row each), for the chapter."""
    rows = []
    for s in specs:
        rows.append(
            {
                "model": s.name,
                "family": s.family,
                "size": s.size,
                "source": s.source.type,
                "hub_id": s.hub_id,
                "revision": s.revision,
                "dtype": s.dtype,
                "attention": s.attn_implementation,
                "readout": s.score_readout,
                "remote_code": s.trust_remote_code,
                "chat_template": s.chat_template,
                "pad_token": s.pad_token,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class InputOverview:
    """Examples of token-exact inputs and the result of checking every input (see :func:`input_overview`)."""

    examples: pd.DataFrame = field(default_factory=pd.DataFrame)
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)


def _tokens(tok: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Tokens separated by spaces, a newline inside a token written ``\\n`` (one line of text)."""
    return " ".join(str(t).replace("\n", "\\n") for t in tok.convert_ids_to_tokens(list(ids)))


def _examples(
    model: str, tok: PreTrainedTokenizerBase, split: TemplateSplit, cands: Sequence[Candidate], n: int = 4
) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "prefix tokens": len(split.prefix_ids),
            "prefix ends with": _tokens(tok, split.prefix_ids[-6:]),
            "word": c.text,
            "word ids": list(c.ids),
            "word tokens": _tokens(tok, c.ids),
            "suffix": _tokens(tok, split.suffix_ids),
        }
        for c in cands[:n]
    ]


def examples_by_model(examples: pd.DataFrame) -> pd.DataFrame:
    """The examples of :func:`input_overview` compactly, one row per RM: the end of the prefix, the suffix,
    and each example word as its tokens and token ids (e.g. ``affection = aff ection [2804, 976]``)."""
    if examples.empty:
        return pd.DataFrame(columns=["model", "prefix ends with", "words as tokens [ids]", "suffix"])
    rows = []
    for model, g in examples.groupby("model", sort=False):
        words = "; ".join(f"{r['word']} = {r['word tokens']} {list(r['word ids'])}" for _, r in g.iterrows())
        first = g.iloc[0]
        rows.append(
            {
                "model": model,
                "prefix ends with": first["prefix ends with"],
                "words as tokens [ids]": words,
                "suffix": first["suffix"],
            }
        )
    return pd.DataFrame(rows)


def input_overview(
    specs: Sequence[ModelSpec],
    prompts: Mapping[str, str],
    words: Sequence[str],
    system_prompt: str | None = None,
    sample_other_prompts: int = 20,
) -> InputOverview:
    """Token-exactness of the inputs: for each RM, examples from the first prompt (``prompts``: id -> text, in
    order), and :func:`~rmvalues.engine.inputs.check_inputs` over every word of the first prompt and
    ``sample_other_prompts`` words of each other prompt."""
    examples: list[dict[str, Any]] = []
    checks = []
    for spec in specs:
        tok = load_tokenizer(spec)
        n_checked, problems, how = 0, [], {}
        for k, (pid, text) in enumerate(prompts.items()):
            split = split_template(tok, text, pid, system_prompt)
            sample = words if k == 0 else words[:: max(1, len(words) // sample_other_prompts)]
            cands = word_candidates(tok, split, sample)
            for c in cands:
                how[c.how] = how.get(c.how, 0) + 1
                problems += [f"{pid}/{c.text}: {problem}" for problem in check_inputs(tok, split, c)]
            n_checked += len(cands)
            if k == 0:
                examples += _examples(spec.name, tok, split, cands)
        checks.append(
            {
                "model": spec.name,
                "inputs checked": n_checked,
                "in-context": how.get("in-context", 0),
                "bare": how.get("bare", 0),
                "problems": len(problems),
                "first problem": problems[0] if problems else "",
            }
        )
    return InputOverview(pd.DataFrame(examples), pd.DataFrame(checks))


def category_medians(scores: pd.DataFrame) -> pd.DataFrame:
    """Median rank per (model, prompt, category) with framing and family (pooled subcategories)."""
    return median_ranks(rank_scores(scores))


def median_table(
    medians: pd.DataFrame, by: Sequence[str] = ("corpus", "rm", "family", "framing")
) -> pd.DataFrame:
    """The median over prompts of each category's median rank, one row per ``by`` group and one column per
    category (rounded to 0.1)."""
    if medians.empty:
        return pd.DataFrame()
    return (
        medians.groupby([*by, "category"], observed=True)["median_rank"].median().unstack("category").round(1)
    )


def top_bottom_words(scores: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """Per model and framing: the ``n`` words with the highest and the lowest mean score over prompts."""
    df = scores.drop_duplicates(["model", "prompt_id", "corpus", "word"])
    mean = df.groupby(["model", "framing", "corpus", "word"], observed=True)["score"].mean().reset_index()
    rows = []
    for (model, framing, corpus), g in mean.groupby(["model", "framing", "corpus"], sort=True):
        g = g.sort_values("score", ascending=False)
        rows.append(
            {
                "model": model,
                "framing": framing,
                "corpus": corpus,
                "top": ", ".join(g["word"].head(n)),
                "bottom": ", ".join(g["word"].tail(n)[::-1]),
            }
        )
    return pd.DataFrame(rows)


LIVE_VS_PUBLISHED_COLUMNS = [
    "model",
    "corpus",
    "prompts",
    "words",
    "median_spearman",
    "min_spearman",
    "max_abs_diff",
]


def live_vs_published(live: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """For RMs with both live and published scores: Spearman correlation of the scores per prompt and corpus
    (words in both), summarized per model and corpus. Empty when no RM has both."""
    from scipy.stats import spearmanr

    cols = LIVE_VS_PUBLISHED_COLUMNS
    if live.empty or published.empty:
        return pd.DataFrame(columns=cols)
    key = ["model", "prompt_id", "corpus", "word"]
    a = live.drop_duplicates(key)[[*key, "score"]]
    b = published.drop_duplicates(key)[[*key, "score"]]
    both = a.merge(b, on=key, suffixes=("_live", "_published"))
    if both.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (model, corpus), g in both.groupby(["model", "corpus"], sort=True):
        rhos = [
            spearmanr(h["score_live"], h["score_published"]).statistic
            for _, h in g.groupby("prompt_id")
            if len(h) > 2
        ]
        rows.append(
            {
                "model": model,
                "corpus": corpus,
                "prompts": g["prompt_id"].nunique(),
                "words": g["word"].nunique(),
                "median_spearman": float(np.nanmedian(rhos)) if rhos else float("nan"),
                "min_spearman": float(np.nanmin(rhos)) if rhos else float("nan"),
                "max_abs_diff": float((g["score_live"] - g["score_published"]).abs().max()),
            }
        )
    return pd.DataFrame(rows, columns=cols)


#: The category whose framing contrast the chapter shows for each Big Two corpus (the other is its mirror).
BIG2_CATEGORY = dict.fromkeys(BIG2, CATEGORY)


def framing_contrast_table(
    contrasts: pd.DataFrame, categories: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The framing contrasts ``D`` per RM and of the pair, for readers (:func:`rmvalues.stats.contrast_reader_table`)."""
    return contrast_reader_table(contrasts, categories, pair=False)
