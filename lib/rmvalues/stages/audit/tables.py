"""The audit's descriptive tables: how each RM tokenizes the corpus words (the audited RMs' own tokenizers
beside the reference families'), and how the audited RMs were scored (from the scoring run's manifest and the
registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ...data.tokenizers import FamilyTokenizer, count_tokens
from ...models.registry import ModelSpec

__all__ = ["SCORING_COLUMNS", "TOKEN_COLUMNS", "scoring_facts", "tokenization_table"]

#: Columns of :func:`tokenization_table`.
TOKEN_COLUMNS = [
    "rm",
    "role",
    "family",
    "corpus",
    "tokenizer",
    "how",
    "n_words",
    "n_one_token",
    "n_split",
    "share_split",
    "note",
]
#: Columns of :func:`scoring_facts`.
SCORING_COLUMNS = [
    "rm",
    "family",
    "source",
    "chat_template",
    "template_date",
    "score_readout",
    "dtype",
    "device",
    "method",
    "transformers_version",
    "n_prompts",
    "system_prompt",
]


def _row(
    rm: str, role: str, family: str, corpus: str, tokenizer: str, how: str, counts: pd.Series, note: str
):
    n = int(counts.size)
    one = int((counts == 1).sum())
    return {
        "rm": rm,
        "role": role,
        "family": family,
        "corpus": corpus,
        "tokenizer": tokenizer,
        "how": how,
        "n_words": n,
        "n_one_token": one,
        "n_split": n - one,
        "share_split": (n - one) / n if n else float("nan"),
        "note": note,
    }


def tokenization_table(
    live: pd.DataFrame,
    words: pd.DataFrame,
    tokenization: pd.DataFrame,
    tokenizers: Mapping[str, FamilyTokenizer],
    reference_families: list[str],
) -> pd.DataFrame:
    """One row per audited RM and corpus (its own tokenizer: the answer's token count as the scoring run fed
    it, after the chat template's assistant header) and per reference family and corpus (the family's declared
    tokenizer, the word bare, :mod:`rmvalues.data.tokenizers`): words that are one token and words split into
    several. ``words``: ``corpus, word`` of the words compared; ``tokenization``: the corpora run's
    ``tokenization.parquet``."""
    rows = []
    for (rm, corpus), grp in live.groupby(["model", "corpus"], sort=True):
        keep = grp[grp["word"].isin(words.loc[words["corpus"] == corpus, "word"])]
        per_word = keep.groupby("word")["n_tokens"].max().astype(float)
        varies = int((keep.groupby("word")["n_tokens"].nunique() > 1).sum())
        note = f"{varies} word(s) tokenized differently under different prompts (the largest count is shown)"
        rows.append(
            _row(rm, "audited", str(grp["family"].iloc[0]), corpus, "its own", "in context", per_word,
                 note if varies else "")
        )  # fmt: skip
    for family in reference_families:
        tok = tokenizers.get(family)
        for corpus, cw in words.groupby("corpus", sort=True):
            label = f"the {family} reference RMs"
            if tok is None:
                rows.append(
                    _row(label, "reference", family, corpus, "", "", pd.Series(dtype=float),
                         f"no tokenizer declared for family {family!r} (config/published_rms.yaml, tokenizers:)")
                )  # fmt: skip
                continue
            if tok.dataset is not None:
                counts = pd.Series(count_tokens(tok.dataset, list(cw["word"])), dtype=float)
                note = tok.proxy_for_published
            else:
                have = tokenization[(tokenization["model"] == tok.model) & (tokenization["corpus"] == corpus)]
                counts = cw.merge(have[["word", "n_tokens_bare"]], on="word")["n_tokens_bare"].astype(float)
                note = tok.proxy_for_published
                if have.empty:
                    note = (
                        f"the corpora run did not tokenize {corpus} with {tok.model} (its `models` parameter)"
                    )
            rows.append(_row(label, "reference", family, corpus, tok.name, "bare", counts, note))
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)


def scoring_facts(
    models: list[str],
    manifest: Mapping[str, Any],
    specs: Mapping[str, ModelSpec],
    n_prompts: Mapping[str, int],
) -> pd.DataFrame:
    """How each audited RM was scored: its manifest entry in the scoring run (chat template, read-out, dtype,
    device, method, transformers version), its registry entry's template date and source, the number of
    prompts and the system prompt."""
    entries = {m["name"]: m for m in manifest["models"]}
    system = manifest["parameters"]["system_prompt"]
    rows = []
    for name in models:
        spec = specs[name]
        entry = entries.get(name)
        if entry is None:  # the run reused its stored scores without loading the model: the registry's entry
            gone = "not recorded (the scoring run reused stored scores without loading the RM)"
            entry = {"family": spec.family, "source": spec.source.type, "hub_id": spec.hub_id,
                     "revision": spec.revision, "chat_template": spec.chat_template,
                     "score_readout": spec.score_readout or gone, "dtype": f"{spec.dtype} (registry)",
                     "device": gone, "method": gone, "transformers_version": gone}  # fmt: skip
        source = entry["source"]
        if entry["hub_id"]:
            source = f"{entry['hub_id']}@{entry['revision'] or 'unpinned'}"
        rows.append(
            {
                "rm": name,
                "family": entry["family"],
                "source": source,
                "chat_template": entry["chat_template"],
                "template_date": spec.template_date or "not pinned",
                "score_readout": entry["score_readout"],
                "dtype": entry["dtype"],
                "device": entry["device"],
                "method": entry["method"],
                "transformers_version": entry["transformers_version"],
                "n_prompts": int(n_prompts[name]),
                "system_prompt": "the template's default" if system is None else repr(system),
            }
        )
    return pd.DataFrame(rows, columns=SCORING_COLUMNS)
