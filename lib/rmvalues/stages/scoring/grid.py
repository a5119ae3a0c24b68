"""The scoring grid: work units (model x prompt x chunk of candidates), their part files, the fingerprints
that discard stale parts, the split of the grid over processes, and the deterministic merge of the parts.

Each unit is written atomically to ``<output_dir>/parts/<model>/<prompt>.<chunk>.parquet`` as soon as it is
scored; a rerun skips the finished units (a killed run loses at most the unit in flight), and a change of
what would be scored (model entry, dtype, candidates, word list, system prompt: the model's *fingerprint*)
discards that model's parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ...core.files import atomic_write_bytes
from ...data.prompts import framing_of
from ...data.scores import conform, empty_scores
from ...engine.inputs import ScoringError
from ...models.registry import ModelSpec
from .params import Params

log = logging.getLogger(__name__)

#: Folder of the part files (one per unit) inside the output folder.
PARTS = "parts"
#: Folder of the per-process failure lists inside the output folder.
FAILURES = "failures"
#: The file in a model's parts folder that holds the fingerprint its parts were made under.
FINGERPRINT = "fingerprint.json"
#: Corpus label written for exhaustive (vocabulary) scoring.
VOCAB_CORPUS = "vocab"
#: Columns of a part file.
PART_COLUMNS = ["model", "prompt_id", "chunk", "word", "token_id", "how", "n_tokens", "token_ids", "score"]

__all__ = [
    "FAILURES",
    "FINGERPRINT",
    "PARTS",
    "PART_COLUMNS",
    "VOCAB_CORPUS",
    "Unit",
    "merge_parts",
    "model_fingerprint",
    "plan_units",
    "reset_stale_parts",
    "safe_name",
    "select_words",
    "shard",
]


def select_words(labels: pd.DataFrame, max_words: int | None) -> pd.DataFrame:
    """The labelled rows of at most ``max_words`` words per corpus, taken alternately from its categories in
    alphabetical order (deterministic, balanced); every word when ``max_words`` is None."""
    if max_words is None:
        return labels.reset_index(drop=True)
    keep: list[pd.DataFrame] = []
    for _corpus, df in labels.groupby("corpus", sort=True):
        per_cat = [sorted(g["word"].unique()) for _, g in df.groupby("category", sort=True)]
        chosen: list[str] = []
        seen: set[str] = set()
        for i in range(max(len(w) for w in per_cat)):
            for words in per_cat:
                if i < len(words) and words[i] not in seen and len(chosen) < max_words:
                    chosen.append(words[i])
                    seen.add(words[i])
        keep.append(df[df["word"].isin(seen)])
    return pd.concat(keep, ignore_index=True)


@dataclass(frozen=True)
class Unit:
    """One work unit: a model, a prompt and a chunk of the candidates."""

    model: str
    prompt_id: str
    chunk: int = 0
    n_chunks: int = 1

    def path(self, parts_dir: Path) -> Path:
        """The unit's part file."""
        return parts_dir / safe_name(self.model) / f"{self.prompt_id}.{self.chunk:04d}.parquet"


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a model name (``/`` and other odd characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name)


def model_fingerprint(
    spec: ModelSpec, params: Params, words: Sequence[str], files_digest: str | None = None
) -> dict[str, Any]:
    """What determines a model's scores; parts made under another fingerprint are discarded. ``files_digest``:
    the digest of a trained RM's files (a model trained again is scored again)."""
    entry = {k: v for k, v in asdict(spec).items() if k not in ("notes", "registry_file")}
    digest = (
        hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest() if params.candidates == "words" else ""
    )
    return {
        "entry": entry,
        "dtype": params.dtype if params.dtype != "auto" else spec.dtype,
        "candidates": params.candidates,
        "words_sha256": digest,
        "system_prompt": params.system_prompt,
        "chunk_size": params.chunk_size if params.candidates == "vocab" else None,
        **({"files_sha256": files_digest} if files_digest else {}),
    }


def reset_stale_parts(parts_dir: Path, fingerprints: Mapping[str, dict[str, Any]]) -> list[str]:
    """Discard the parts of every model whose parts were made under another fingerprint, and write the
    current fingerprints (process 0 only, before any process writes parts). Returns the models reset."""
    reset = []
    for model, fp in fingerprints.items():
        folder = parts_dir / safe_name(model)
        fp_file = folder / FINGERPRINT
        if fp_file.is_file() and json.loads(fp_file.read_text(encoding="utf-8")) != fp:
            log.warning("model %s: parameters changed since its parts were written; rescoring it", model)
            shutil.rmtree(folder)
            reset.append(model)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(fp_file, (json.dumps(fp, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return reset


def plan_units(
    model_names: Sequence[str], prompt_ids: Sequence[str], n_chunks: Mapping[str, int] | None = None
) -> list[Unit]:
    """The grid in its fixed order: models, then prompts, then chunks."""
    n_chunks = n_chunks or {}
    return [
        Unit(m, p, c, n_chunks.get(m, 1))
        for m in model_names
        for p in prompt_ids
        for c in range(n_chunks.get(m, 1))
    ]


def shard(units: Sequence[Unit], rank: int, world_size: int) -> list[Unit]:
    """This process's units: ``units[rank::world_size]``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return list(units[rank::world_size])


def _read_parts(parts_dir: Path, units: Sequence[Unit], exclude: set[str] | frozenset[str]):
    frames, missing = [], []
    for unit in units:
        if unit.model in exclude:
            continue
        path = unit.path(parts_dir)
        if not path.is_file():
            missing.append(unit)
            continue
        frames.append(pd.read_parquet(path))
    missing_models = {u.model for u in missing}
    frames = [f for f in frames if not f.empty and f["model"].iloc[0] not in missing_models]
    return frames, missing


def merge_parts(
    output_dir: str | os.PathLike[str],
    units: Sequence[Unit],
    specs: Mapping[str, ModelSpec],
    labels: pd.DataFrame | None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame, pd.DataFrame, list[Unit]]:
    """``(scores, tokens, missing units)`` from the part files of ``units`` (models in ``exclude`` left out).

    ``scores`` is the long scores table (:data:`rmvalues.data.scores.SCORE_COLUMNS`, ``source = "live"``, one
    row per corpus label of a word; corpus ``"vocab"`` without labels when ``labels`` is None), ``tokens`` the
    token ids of every candidate per model and prompt. Deterministic: parts are read in the grid's order and
    the tables are sorted, so the result does not depend on which process scored which unit or in which order.
    """
    frames, missing = _read_parts(Path(output_dir) / PARTS, units, exclude)
    if not frames:
        return empty_scores(), pd.DataFrame(columns=PART_COLUMNS), missing
    raw = pd.concat(frames, ignore_index=True)
    if raw.duplicated(["model", "prompt_id", "word", "token_id"]).any():
        raise ScoringError("duplicated (model, prompt, candidate) rows in the parts")
    meta = pd.DataFrame(
        [
            {
                "model": name,
                "model_id": spec.hub_id or spec.name,
                "revision": spec.revision,
                "family": spec.family,
            }
            for name, spec in specs.items()
        ]
    )
    raw = raw.merge(meta, on="model", how="left")
    if labels is not None:
        long = raw.merge(labels[["corpus", "word", "category", "subcategory"]], on="word", how="inner")
    else:
        long = raw.assign(corpus=VOCAB_CORPUS, category=pd.NA, subcategory=pd.NA)
    long["model"] = long["model_id"]
    long["source"] = "live"
    long["framing"] = long["prompt_id"].map(framing_of)
    scores = conform(long)
    scores = scores.sort_values(
        ["model", "prompt_id", "corpus", "category", "word"], kind="stable"
    ).reset_index(drop=True)
    tokens = raw[["model_id", "prompt_id", "word", "token_id", "how", "n_tokens", "token_ids"]].rename(
        columns={"model_id": "model"}
    )
    tokens = tokens.sort_values(["model", "prompt_id", "word"], kind="stable").reset_index(drop=True)
    return scores, tokens, missing
