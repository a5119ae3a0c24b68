"""Preference data for reward-model training: sources, validation, token-length eligibility, nested subsets.

A *source* (``config/training.yaml``, key ``sources``) names where preference pairs come from and in which
format. Three origins:

* ``dataset``: a file of the data layer (``config/datasets.yaml``; fetched and sha256-checked by
  :func:`rmvalues.data.datasets.fetch`), e.g. Anthropic's HH-RLHF harmless-base test split, offline;
* ``path``: a local ``.jsonl``, ``.jsonl.gz`` or ``.parquet`` file (relative paths from the project root);
* ``hub_id``: a Hugging Face hub dataset (``hub_config``, ``split``, ``revision``), loaded with
  :func:`datasets.load_dataset` where the machine has access (offline it raises a clear error).

and three formats:

``hh-rlhf``
    ``chosen`` / ``rejected``: whole dialogues as text, ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``
    (Anthropic HH-RLHF). They are parsed into chat messages (:func:`parse_hh_dialogue`) and rendered with
    each base model's own chat template.
``messages``
    ``chosen`` / ``rejected``: lists of ``{"role", "content"}`` messages (Skywork-Reward-Preference-80K).
``rated-pair``
    ``conv_A`` / ``conv_B`` message lists with ``conv_A_rating`` / ``conv_B_rating`` (llm-blender
    Unified-Feedback): the higher-rated conversation is *chosen*; pairs with equal ratings are dropped (as the
    GRM training code of the paper's Unified-Feedback runs does).

:func:`load_pairs` returns one row per pair: ``pair_id`` (row number in the source), ``chosen`` and
``rejected`` (message lists, or ``None`` with a ``problem`` when a dialogue cannot be parsed). A file with
missing columns or an empty chosen/rejected text raises :class:`PreferenceDataError` before any training.

**Eligibility and nested subsets** (:func:`select_pairs`). Pairs are visited in one fixed pseudo-random
order (``numpy.random.default_rng(data_seed).permutation``). A pair is *eligible* when it parses, chosen
and rejected differ, and both token sequences fit ``max_length`` under *every* base model of the grid (so
all base models train on the same pairs; TRL's ``RewardTrainer`` would otherwise silently drop a pair that
is too long for one model only) and contain no pad token (the sequence-classification head finds the last
real token by the pad id). The first ``n_eval`` eligible pairs are the held-out set; the following ones
form the training pool, and a quantity ``n`` trains on the first ``n`` of the pool: the 64-pair subset is
inside the 128-pair subset, which is inside the 256-pair subset, and so on.

**Length rule** (``truncation``). ``"drop"`` (the default, TRL's behaviour): a pair with a side longer than
``max_length`` tokens is not eligible. ``"left"``: a longer sequence is *left-truncated* to ``max_length``
tokens (:func:`truncate_left`: the template's leading BOS token is kept, then the last ``max_length - 1``
tokens), so the end of the conversation, where chosen and rejected differ, is kept and no pair is dropped
for length; the eligibility checks then apply to the truncated sequences.

**Per-seed subsets** (:meth:`PairSelection.subset` with ``seed``). Each seed draws its own order of the
training pool (``default_rng([data_seed, seed])``) and a quantity ``n`` trains on the first ``n`` pairs of
that order: subsets differ between seeds (as far as the pool allows) and stay nested within a seed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core import paths
from ..core.errors import RmvaluesError
from ..core.files import sha256_file
from . import datasets

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

FORMATS = ("hh-rlhf", "messages", "rated-pair")
#: How sequences longer than ``max_length`` are handled (:func:`select_pairs`).
TRUNCATIONS = ("drop", "left")
#: Columns each format needs.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "hh-rlhf": ("chosen", "rejected"),
    "messages": ("chosen", "rejected"),
    "rated-pair": ("conv_A", "conv_B", "conv_A_rating", "conv_B_rating"),
}
SOURCE_FIELDS = (
    "description",
    "format",
    "dataset",
    "path",
    "hub_id",
    "hub_config",
    "split",
    "revision",
    "licence",
)
ROLES = ("system", "user", "assistant")

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


class PreferenceDataError(RmvaluesError, ValueError):
    """Preference data cannot be used as given (the message names the file, the problem and the fix)."""


# -- sources ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceSource:
    """One preference-data source (an entry of ``sources`` in ``config/training.yaml``)."""

    name: str
    format: str
    description: str = ""
    dataset: str | None = None
    path: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "train"
    revision: str | None = None
    licence: str | None = None

    @property
    def origin(self) -> str:
        """``dataset``, ``path`` or ``hub``."""
        return "dataset" if self.dataset else "path" if self.path else "hub"

    def describe(self) -> str:
        if self.dataset:
            return f"data set {self.dataset}"
        if self.path:
            return f"file {self.path}"
        cfg = f" ({self.hub_config})" if self.hub_config else ""
        return f"hub data set {self.hub_id}{cfg}, split {self.split}, revision {self.revision or 'main'}"


def parse_source(name: str, raw: Mapping[str, Any], where: str = "config/training.yaml") -> PreferenceSource:
    """A validated :class:`PreferenceSource` from a mapping (raises :class:`PreferenceDataError`)."""
    if not isinstance(raw, Mapping):
        raise PreferenceDataError(f"{where}: source {name!r} must be a mapping of fields")
    unknown = sorted(set(raw) - set(SOURCE_FIELDS))
    if unknown:
        raise PreferenceDataError(
            f"{where}: source {name!r} has unknown field(s) {unknown}; valid fields: {', '.join(SOURCE_FIELDS)}"
        )
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise PreferenceDataError(
            f"{where}: source {name!r} has format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        )
    origins = [k for k in ("dataset", "path", "hub_id") if raw.get(k)]
    if len(origins) != 1:
        raise PreferenceDataError(
            f"{where}: source {name!r} needs exactly one of dataset (a name in config/datasets.yaml), path (a "
            f"local .jsonl/.jsonl.gz/.parquet file) or hub_id (a hub data set); it has {origins or 'none'}"
        )
    values = {k: (str(v) if v is not None else None) for k, v in raw.items()}
    return PreferenceSource(name=name, **values)  # type: ignore[arg-type]


# -- parsing ----------------------------------------------------------------------------------------------


def parse_hh_dialogue(text: str) -> tuple[list[dict[str, str]] | None, str | None]:
    """``(messages, None)`` for a well-formed HH-RLHF dialogue, ``(None, problem)`` otherwise.

    A well-formed dialogue is ``"\\n\\nHuman: ..."`` turns alternating with ``"\\n\\nAssistant: ..."`` turns,
    starting with the human and ending with the assistant, no turn empty. Contents are stripped.
    """
    if not isinstance(text, str):
        return None, "not a text"
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        return None, "text before the first turn"
    roles = parts[1::2]
    contents = [c.strip() for c in parts[2::2]]
    if not roles:
        return None, "no Human/Assistant turns"
    messages = [
        {"role": "user" if r == "Human" else "assistant", "content": c}
        for r, c in zip(roles, contents, strict=True)
    ]
    return _check_messages(messages)


def _check_messages(messages: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    if not isinstance(messages, list | tuple) or not messages:
        return None, "no messages"
    out: list[dict[str, str]] = []
    for m in messages:
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            return None, "a message lacks role or content"
        role, content = str(m["role"]), m["content"]
        if role not in ROLES:
            return None, f"unknown role {role!r}"
        if not isinstance(content, str) or not content.strip():
            return None, "an empty turn"
        out.append({"role": role, "content": content})
    turns = [m["role"] for m in out if m["role"] != "system"]
    if any(m["role"] == "system" for m in out[1:]):
        return None, "a system message after the first turn"
    if not turns or turns[0] != "user":
        return None, "does not start with a user turn"
    if any(a == b for a, b in zip(turns, turns[1:], strict=False)):
        return None, "roles do not alternate"
    if turns[-1] != "assistant":
        return None, "does not end with an assistant turn"
    return out, None


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | np.ndarray):
        return len(value) == 0
    return False


def _as_list(value: Any) -> Any:
    """Parquet/arrow hands back message lists as numpy arrays of dicts."""
    if isinstance(value, np.ndarray):
        return [dict(v) if isinstance(v, Mapping) else v for v in value.tolist()]
    return value


def pairs_from_records(raw: pd.DataFrame, fmt: str, where: str) -> pd.DataFrame:
    """Validate ``raw`` (one row per source record) and turn it into ``pair_id, chosen, rejected, problem``.

    Raises :class:`PreferenceDataError` when a required column is missing, the table is empty, or a pair has
    an empty chosen or rejected side (naming the first rows). Dialogues that cannot be parsed are kept with
    ``chosen = rejected = None`` and a ``problem`` (they are counted, never trained on).
    """
    if fmt not in FORMATS:
        raise PreferenceDataError(f"{where}: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    need = REQUIRED_COLUMNS[fmt]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise PreferenceDataError(
            f"{where}: missing column(s) {missing} for format {fmt!r}, which needs {list(need)}; the file has "
            f"columns {list(raw.columns)}. Fix the file or the source's format in config/training.yaml"
        )
    if raw.empty:
        raise PreferenceDataError(f"{where}: holds no preference pairs")
    sides = need[:2]
    empty = [i for i in range(len(raw)) if any(_is_empty(raw[c].iat[i]) for c in sides)]
    if empty:
        raise PreferenceDataError(
            f"{where}: {len(empty)} pair(s) with an empty {' or '.join(sides)} (rows {empty[:10]}"
            f"{' ...' if len(empty) > 10 else ''}, counted from 0); remove them from the file"
        )
    rows: list[dict[str, Any]] = []
    for i in range(len(raw)):
        problem = None
        if fmt == "hh-rlhf":
            chosen, p1 = parse_hh_dialogue(raw["chosen"].iat[i])
            rejected, p2 = parse_hh_dialogue(raw["rejected"].iat[i])
        elif fmt == "messages":
            chosen, p1 = _check_messages(_as_list(raw["chosen"].iat[i]))
            rejected, p2 = _check_messages(_as_list(raw["rejected"].iat[i]))
        else:
            a, b = raw["conv_A_rating"].iat[i], raw["conv_B_rating"].iat[i]
            if a == b:
                chosen = rejected = None
                p1, p2 = "equal ratings", None
            else:
                first, second = ("conv_A", "conv_B") if a > b else ("conv_B", "conv_A")
                chosen, p1 = _check_messages(_as_list(raw[first].iat[i]))
                rejected, p2 = _check_messages(_as_list(raw[second].iat[i]))
        problem = p1 or p2
        if problem is None and chosen == rejected:
            problem = "chosen equals rejected"
        if problem is not None:
            chosen = rejected = None
        rows.append({"pair_id": i, "chosen": chosen, "rejected": rejected, "problem": problem})
    return pd.DataFrame(rows)


def _read_file(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith(".jsonl.gz") or name.endswith(".jsonl") or name.endswith(".json.gz"):
        opener = gzip.open if name.endswith(".gz") else open
        records = []
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise PreferenceDataError(f"{path}: line {n + 1} is not JSON ({exc})") from None
        return pd.DataFrame.from_records(records)
    raise PreferenceDataError(f"{path}: unsupported file type; use .jsonl, .jsonl.gz or .parquet")


def _load_hub(source: PreferenceSource) -> pd.DataFrame:
    offline = os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ) in ("1", "true", "True")
    try:
        from datasets import load_dataset

        ds = load_dataset(
            source.hub_id, source.hub_config, split=source.split, revision=source.revision or None
        )
    except Exception as exc:  # datasets raises many error types (connection, not cached, ...)
        hint = (
            "this machine is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): download the data set once on a "
            "machine with hub access into the Hugging Face cache, or export it to a .jsonl/.parquet file and "
            "register it as a `path` source"
            if offline
            else "check the hub id, config, split and revision, and your hub access"
        )
        raise PreferenceDataError(
            f"source {source.name!r}: cannot load {source.describe()}: {type(exc).__name__}: {exc}; {hint}"
        ) from None
    return ds.to_pandas()


def read_source(source: PreferenceSource) -> tuple[pd.DataFrame, str | None]:
    """The raw records of ``source`` and the sha256 of its file (``None`` for hub data)."""
    if source.dataset:
        file = datasets.fetch(source.dataset)
        return _read_file(file), datasets.get(source.dataset).sha256
    if source.path:
        file = paths.resolve(os.path.expandvars(source.path))
        if not file.is_file():
            raise PreferenceDataError(f"source {source.name!r}: file {file} does not exist")
        return _read_file(file), sha256_file(file)
    return _load_hub(source), None


def load_pairs(source: PreferenceSource) -> pd.DataFrame:
    """The pairs of ``source`` (``pair_id, chosen, rejected, problem``); ``attrs``: ``sha256``, ``n_rows``."""
    raw, sha = read_source(source)
    pairs = pairs_from_records(raw, source.format, f"source {source.name!r} ({source.describe()})")
    pairs.attrs.update(sha256=sha, n_rows=len(raw), source=source.name)
    return pairs


# -- tokenization and eligibility ---------------------------------------------------------------------------


def tokenize_messages(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a whole conversation rendered by the tokenizer's chat template.

    The same call TRL's ``RewardTrainer`` makes for conversational data (``apply_chat_template(...,
    tokenize=True, return_dict=True)``): the template's special tokens (one BOS where the template writes
    it), no generation prompt, nothing added.
    """
    return list(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True)["input_ids"])


def truncate_left(ids: Sequence[int], max_length: int, bos_id: int | None = None) -> list[int]:
    """``ids`` cut to at most ``max_length`` tokens from the left, keeping the end of the sequence.

    When the sequence starts with ``bos_id`` (the tokenizer's BOS token, written by the chat template) that
    first token is kept and followed by the last ``max_length - 1`` tokens (models expect their BOS at
    position 0); otherwise the last ``max_length`` tokens are kept. Shorter sequences are returned unchanged.
    """
    ids = list(ids)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to truncate, not {max_length}")
    if len(ids) <= max_length:
        return ids
    if bos_id is not None and ids[0] == bos_id:
        return ids[:1] + ids[len(ids) - (max_length - 1) :]
    return ids[len(ids) - max_length :]


@dataclass
class PairSelection:
    """The outcome of :func:`select_pairs`: held-out and training pairs, tokenized per model."""

    source: str
    eval_ids: list[int]
    train_ids: list[int]  # the training pool in order; quantity n = train_ids[:n]
    tokens: dict[str, dict[int, tuple[list[int], list[int]]]]  # model -> pair_id -> (chosen, rejected)
    n_rows: int
    n_examined: int
    reasons: dict[str, int]  # why examined pairs were not eligible
    max_length: int | None
    data_seed: int
    sha256: str | None = None
    messages: dict[int, tuple[list[dict[str, str]], list[dict[str, str]]]] = field(default_factory=dict)
    truncation: str = "drop"
    n_truncated: dict[str, int] = field(default_factory=dict)  # model -> selected pairs with a truncated side

    def seed_order(self, seed: int) -> list[int]:
        """The training pool in the order drawn for ``seed`` (``default_rng([data_seed, seed])``)."""
        perm = np.random.default_rng([int(self.data_seed), int(seed)]).permutation(len(self.train_ids))
        return [self.train_ids[int(i)] for i in perm]

    def subset(self, n: int, seed: int | None = None) -> list[int]:
        """The training pairs of quantity ``n``: the first ``n`` of the pool (``seed`` None), or the first ``n``
        of the pool in ``seed``'s order (:meth:`seed_order`). Nested either way: ``subset(m, s)`` is a prefix
        of ``subset(n, s)`` for m <= n."""
        if n > len(self.train_ids):
            raise PreferenceDataError(
                f"source {self.source!r}: quantity {n} is larger than the {len(self.train_ids)} training pairs "
                "selected"
            )
        return (self.train_ids if seed is None else self.seed_order(seed))[:n]

    def digest(self, ids: Sequence[int]) -> str:
        """A short hash of a list of pair ids (identifies a cell's training data in its manifest)."""
        return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_rows": self.n_rows,
            "n_examined": self.n_examined,
            "n_eligible": len(self.eval_ids) + len(self.train_ids),
            "n_eval": len(self.eval_ids),
            "n_train_pool": len(self.train_ids),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "data_seed": self.data_seed,
            **{f"left-truncated: {m}": v for m, v in sorted(self.n_truncated.items())},
            **{f"dropped: {k}": v for k, v in sorted(self.reasons.items())},
        }


def _tokenize_pair(
    row: Any, tokenizers: Mapping[str, PreTrainedTokenizerBase], max_length: int | None, truncation: str
) -> tuple[dict[str, tuple[list[int], list[int]]], dict[str, list[str]], list[str]]:
    """One pair's (chosen, rejected) token ids per model under the length rule: ``(tokens, problems, cut)``,
    ``problems`` mapping each reason it is not eligible to the models it applies to, ``cut`` the models
    under which a side was left-truncated."""
    problems: dict[str, list[str]] = {}
    per_model: dict[str, tuple[list[int], list[int]]] = {}
    cut: list[str] = []
    for name, tok in tokenizers.items():
        try:
            c = tokenize_messages(tok, row["chosen"])
            r = tokenize_messages(tok, row["rejected"])
        except Exception as exc:  # a chat template may reject a conversation (jinja raise_exception)
            problems.setdefault(f"rejected by the chat template ({type(exc).__name__})", []).append(name)
            continue
        if truncation == "left" and max_length is not None and max(len(c), len(r)) > max_length:
            c = truncate_left(c, max_length, tok.bos_token_id)
            r = truncate_left(r, max_length, tok.bos_token_id)
            cut.append(name)
        if max_length is not None and max(len(c), len(r)) > max_length:
            problems.setdefault(f"longer than max_length={max_length}", []).append(name)
        pad = tok.pad_token_id
        if pad is not None and (pad in c or pad in r):
            problems.setdefault("contains the pad token", []).append(name)
        if c == r:
            problems.setdefault("chosen equals rejected after tokenization", []).append(name)
        per_model[name] = (c, r)
    return per_model, problems, cut


def select_pairs(
    pairs: pd.DataFrame,
    tokenizers: Mapping[str, PreTrainedTokenizerBase],
    *,
    n_eval: int,
    n_train: int,
    max_length: int | None,
    data_seed: int = 0,
    source: str = "",
    progress: Callable[[int], Any] | None = None,
    truncation: str = "drop",
) -> PairSelection:
    """Held-out and nested training pairs that every model in ``tokenizers`` can train on (module docstring).

    Visits pairs in the order of ``default_rng(data_seed).permutation`` until ``n_eval + n_train`` eligible
    pairs are found. ``truncation``: ``"drop"`` pairs longer than ``max_length``, or left-truncate their
    sequences (``"left"``, :func:`truncate_left`). Raises :class:`PreferenceDataError` (before any training)
    when the source holds fewer eligible pairs.
    """
    if n_eval < 0 or n_train < 1:
        raise PreferenceDataError(f"n_eval must be >= 0 and n_train >= 1 (got {n_eval}, {n_train})")
    if truncation not in TRUNCATIONS:
        raise PreferenceDataError(f"truncation is {truncation!r}; valid: {', '.join(TRUNCATIONS)}")
    if truncation == "left" and (max_length is None or max_length < 2):
        raise PreferenceDataError("left truncation needs a max_length of at least 2 tokens")
    need = n_eval + n_train
    n_rows = int(pairs.attrs.get("n_rows", len(pairs)))
    if need > len(pairs):
        raise PreferenceDataError(
            f"source {source!r}: {n_train} training + {n_eval} held-out pairs requested but the source has only "
            f"{len(pairs)} pairs; lower the quantities (or eval_pairs) in the grid"
        )
    order = np.random.default_rng(data_seed).permutation(len(pairs))
    reasons: Counter[str] = Counter()
    tokens: dict[str, dict[int, tuple[list[int], list[int]]]] = {m: {} for m in tokenizers}
    messages: dict[int, tuple[list[dict[str, str]], list[dict[str, str]]]] = {}
    chosen_ids: list[int] = []
    truncated: Counter[str] = Counter()
    examined = 0
    for pos in order:
        if len(chosen_ids) >= need:
            break
        examined += 1
        if progress is not None:
            progress(1)
        row = pairs.iloc[int(pos)]
        pid = int(row["pair_id"])
        if row["problem"] is not None and not (
            isinstance(row["problem"], float) and np.isnan(row["problem"])
        ):
            reasons[str(row["problem"])] += 1
            continue
        per_model, problems, cut = _tokenize_pair(row, tokenizers, max_length, truncation)
        if problems:
            # one reason per dropped pair: the first problem, with the models it applies to
            what, names = next(iter(problems.items()))
            who = "every model" if len(names) == len(tokenizers) > 1 else ", ".join(names)
            reasons[f"{what} ({who})"] += 1
            continue
        for name, pair in per_model.items():
            tokens[name][pid] = pair
        truncated.update(cut)
        messages[pid] = (row["chosen"], row["rejected"])
        chosen_ids.append(pid)
    if len(chosen_ids) < need:
        detail = ", ".join(f"{v} {k}" for k, v in reasons.most_common()) or "none dropped"
        raise PreferenceDataError(
            f"source {source!r}: quantity too large for the data: {n_train} training + {n_eval} held-out pairs "
            f"requested, but only {len(chosen_ids)} of its {len(pairs)} pairs are eligible ({detail}). Lower the "
            f"largest quantity to at most {max(0, len(chosen_ids) - n_eval)}, or raise max_length"
        )
    return PairSelection(
        source=source,
        eval_ids=chosen_ids[:n_eval],
        train_ids=chosen_ids[n_eval:],
        tokens=tokens,
        n_rows=n_rows,
        n_examined=examined,
        reasons=dict(reasons),
        max_length=max_length,
        data_seed=data_seed,
        sha256=pairs.attrs.get("sha256"),
        messages=messages,
        truncation=truncation,
        n_truncated={m: truncated.get(m, 0) for m in tokenizers} if truncation == "left" else {},
    )
