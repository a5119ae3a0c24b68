"""RM scoring stage: score registered reward models on corpus words x prompts, exactly, fast, resumably.

The engine (token-exact inputs, prefix-KV reuse, bucketing, readouts) is :mod:`rmvalues.scoring_engine`;
this module turns it into a stage:

* **Registry as data.** Every RM is an entry of the model registry (``config/models.yaml``,
  ``kind: reward-model``): hub id and pinned revision or a local folder, base family, size, dtype, attention
  implementation, ``trust_remote_code``, ``score_readout``, pad-token rule, chat-template source. Adding an
  RM is one entry; :func:`load_reward_model` loads any of them (``device_map`` for models larger than one
  device). The dtype is the registry's unless overridden, and is recorded in the manifest; nothing is ever
  quantized.
* **The grid** is (model, prompt, chunk of candidates); a chunk is every word of the selected corpora
  (``candidates="words"``) or a slice of the vocabulary (``candidates="vocab"``, every single token id).
  Each unit is written atomically to ``<output_dir>/parts/<model>/<prompt>.<chunk>.parquet`` as soon as it
  is scored; a rerun skips the finished units (a killed run loses at most the unit in flight), and a change
  of what would be scored (model entry, dtype, candidates, word list, system prompt: the model's
  *fingerprint*) discards that model's parts.
* **Failures** are per model: a model that fails to load or score is reported (``failures``) and the others
  continue; the command line exits non-zero at the end.
* **Sharding.** Under ``accelerate launch --multi_gpu --num_processes N -m rmvalues.scoring ...`` (or
  ``torchrun --nproc_per_node N -m rmvalues.scoring ...``; several nodes: add ``--num_machines``/``--machine_rank``
  /``--main_process_ip``) each process scores ``units[rank::N]`` on its own device and process 0 merges after
  a barrier; the merge is sorted, so the table does not depend on the number of processes. On a machine
  without CUDA the processes run on the CPU with a gloo process group (accelerate 1.15's ``--cpu`` flag
  starts a single process unless MPI is configured, so use ``--multi_gpu`` there too).
* **Output**: ``scores.parquet`` in the long scores format of :mod:`rmvalues.scores` (``source = "live"``;
  one row per corpus label of a word), ``tokens.parquet`` (the token ids of every candidate per model and
  prompt, and how they were obtained) and ``timings.parquet`` (per model: load and scoring time,
  candidates per second, method, batch size, dtype, device), plus ``manifest.json``.

Command line (one command scores a new RM; see the README)::

    python -m rmvalues.scoring --models my-rm --corpora big2_nouns --output-dir results/scoring/my-rm
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import models as models_mod
from . import paths
from . import scores as scores_mod
from .manifest import RunRecord, atomic_write_bytes, atomic_write_parquet
from .scoring_engine import (
    METHODS,
    Candidate,
    RewardScorer,
    ScoringError,
    split_template,
    vocab_candidates,
    word_candidates,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

STAGE = "scoring"
CANDIDATE_KINDS = ("words", "vocab")
DTYPE_CHOICES = ("auto", *models_mod.DTYPES)
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Corpus label written for exhaustive (vocabulary) scoring.
VOCAB_CORPUS = "vocab"
#: Default number of vocabulary ids per work unit (vocab mode).
DEFAULT_CHUNK_SIZE = 32768
PARTS = "parts"
#: Seconds to sleep after each written unit (only for tests that kill a run part-way).
UNIT_DELAY_ENV = "RMVALUES_SCORING_UNIT_DELAY"
FAILURES = "failures"
PART_COLUMNS = ["model", "prompt_id", "chunk", "word", "token_id", "how", "n_tokens", "token_ids", "score"]


# -- registry -------------------------------------------------------------------------------------------------


def reward_models(**registry_kwargs: Any) -> list[str]:
    """Registry names of every model of kind ``reward-model``."""
    return sorted(n for n, s in models_mod.registry(**registry_kwargs).items() if s.kind == "reward-model")


def _check_rm(name: str) -> models_mod.ModelSpec:
    spec = models_mod.get_spec(name)
    if spec.kind != "reward-model":
        raise models_mod.RegistryError(
            f"model {name!r} is a {spec.kind}, not a reward model; reward models: {', '.join(reward_models())}"
        )
    return spec


def load_reward_model(
    name: str | models_mod.ModelSpec,
    dtype: str | None = None,
    device: str = "cpu",
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, models_mod.ModelSpec]:
    """A registered RM as ``AutoModelForSequenceClassification`` and its configured tokenizer, eval mode.

    ``dtype`` overrides the registry's (never quantized); ``device_map`` (e.g. ``"auto"``) spreads a large
    model over the available devices instead of moving it to ``device``. Embedded head RMs
    (:data:`rmvalues.scoring_heads.HEAD_RMS`) are trained first when their folder is missing.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from . import scoring_heads

    spec = _check_rm(name) if isinstance(name, str) else name
    if spec.name in scoring_heads.HEAD_RMS:
        scoring_heads.ensure_head_rm(spec.name)
    try:
        folder = models_mod.ensure_local(spec)
        tok = models_mod.load_tokenizer(spec)
    except models_mod.ModelUnavailableError as exc:
        if spec.trust_remote_code:
            raise models_mod.ModelUnavailableError(
                f"{exc} -- {spec.name} runs remote code (trust_remote_code: true, readout "
                f"{spec.score_readout}): it needs its hub files (modeling code and weights) in the local cache"
            ) from None
        raise
    dtype = dtype or spec.dtype
    kwargs: dict[str, Any] = {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder),
        dtype=getattr(torch, dtype),
        attn_implementation=spec.attn_implementation,
        trust_remote_code=spec.trust_remote_code,
        local_files_only=True,
        **kwargs,
    )
    got = type(model).__name__
    if got != spec.architecture and spec.trust_remote_code:
        log.warning("model %s: registry says %s, remote code loads %s", spec.name, spec.architecture, got)
    elif got != spec.architecture:
        raise models_mod.RegistryError(
            f"model {spec.name!r}: registry says architecture {spec.architecture!r} but the checkpoint loads as "
            f"{got!r}; fix the registry entry"
        )
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    if device_map is None:
        model.to(device)
    model.eval()
    return model, tok, spec


# -- parameters -----------------------------------------------------------------------------------------------


@dataclass
class ScoringParams:
    """What to score and how (the chapter's parameters, validated by :func:`check_parameters`)."""

    models: list[str]
    corpora: list[str] = field(default_factory=lambda: ["big2_nouns"])
    prompts: list[str] = field(default_factory=list)  # empty: all 54
    candidates: str = "words"
    max_words: int | None = None
    batch_size: int | str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    method: str = "auto"
    device_map: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    system_prompt: str | None = None
    extra_registry: list[str] = field(default_factory=list)  # extra registry files (e.g. a training run's)

    def selected_prompts(self) -> list[str]:
        return scores_mod._check_prompts(self.prompts)


def check_parameters(params: Mapping[str, Any]) -> None:
    """Validate the scoring stage's parameters before any work; ``ValueError`` says what and how to fix."""
    from . import corpora as corpora_mod

    problems: list[str] = []
    extra = params.get("extra_registry") or []
    if not isinstance(extra, list | tuple) or not all(isinstance(f, str) for f in extra):
        raise ValueError("scoring parameters: extra_registry must be a list of registry YAML files")
    missing = [f for f in extra if not paths.resolve(f).is_file()]
    if missing:
        raise ValueError(
            f"scoring parameters: registry file(s) {missing} do not exist (a training run's registry.yaml is "
            "written by the training stage: run it first, or drop the file from extra_registry)"
        )
    names = params.get("models")
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        problems.append("models must be a non-empty list of registry names")
    else:
        try:
            valid = reward_models(extra=[str(paths.resolve(f)) for f in extra])
        except models_mod.RegistryError as exc:
            raise ValueError(f"model registry is invalid: {exc}") from None
        unknown = [n for n in names if n not in valid]
        if unknown:
            problems.append(
                f"unknown reward model(s) {unknown}; registered reward models: {', '.join(valid)} "
                "(add one to config/models.yaml with kind: reward-model)"
            )
        if len(set(names)) != len(names):
            problems.append(f"models lists a name twice: {names}")
    kind = params.get("candidates", "words")
    if kind not in CANDIDATE_KINDS:
        problems.append(f"candidates={kind!r}; valid: {', '.join(CANDIDATE_KINDS)}")
    corpora = params.get("corpora", [])
    if kind == "words":
        known = corpora_mod.list_corpora()
        if not isinstance(corpora, list | tuple) or not corpora:
            problems.append(f"corpora must be a non-empty list of corpus names ({', '.join(known)})")
        else:
            bad = [c for c in corpora if c not in known]
            if bad:
                problems.append(
                    f"unknown corpus/corpora {bad}; valid: {', '.join(known)} (config/corpora.yaml)"
                )
    prompts = params.get("prompts", [])
    if prompts is None:
        prompts = []
    if not isinstance(prompts, list | tuple):
        problems.append("prompts must be a list of prompt ids (empty: all 54)")
    else:
        try:
            scores_mod._check_prompts(list(prompts))
        except ValueError as exc:
            problems.append(str(exc))
    for key, choices in (("dtype", DTYPE_CHOICES), ("device", DEVICE_CHOICES), ("method", METHODS)):
        value = params.get(key, "auto")
        if value not in choices:
            problems.append(f"{key}={value!r}; valid: {', '.join(choices)}")
    if params.get("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("device='cuda' but no CUDA device is available here; use 'cpu' or 'auto'")
    bs = params.get("batch_size", "auto")
    if not (bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 0)):
        problems.append(f"batch_size={bs!r}; a positive integer, or 'auto' (or 0) for automatic")
    mw = params.get("max_words")
    if mw is not None and not (isinstance(mw, int) and not isinstance(mw, bool) and mw >= 1):
        problems.append(f"max_words={mw!r}; a positive integer or None (every word)")
    cs = params.get("chunk_size", DEFAULT_CHUNK_SIZE)
    if not (isinstance(cs, int) and not isinstance(cs, bool) and cs >= 1):
        problems.append(f"chunk_size={cs!r}; a positive integer")
    dm = params.get("device_map")
    if dm not in (None, "auto", "balanced", "sequential"):
        problems.append(f"device_map={dm!r}; valid: None, 'auto', 'balanced', 'sequential'")
    if problems:
        raise ValueError("scoring parameters: " + "; ".join(problems))


def use_registries(files: Sequence[str]) -> None:
    """Make extra registry files visible to every registry lookup of this process (``$RMVALUES_MODEL_REGISTRY``)."""
    if not files:
        return
    current = [f for f in os.environ.get(models_mod.ENV_EXTRA_REGISTRY, "").split(os.pathsep) if f]
    new = [str(paths.resolve(f)) for f in files]
    os.environ[models_mod.ENV_EXTRA_REGISTRY] = os.pathsep.join(dict.fromkeys([*new, *current]))


def params_from(params: Mapping[str, Any]) -> ScoringParams:
    """:class:`ScoringParams` from a parameter mapping (extra keys such as ``output_dir`` are ignored)."""
    keys = {f for f in ScoringParams.__dataclass_fields__}
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k in keys}
    if values.get("batch_size") == 0:
        values["batch_size"] = "auto"
    return ScoringParams(**values)


# -- words ----------------------------------------------------------------------------------------------------


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


def corpus_words(corpora: Sequence[str], max_words: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``(labels, words)``: the labelled rows of the selected corpora and their unique words, sorted."""
    labels = pd.concat([scores_mod.corpus_labels(c) for c in corpora], ignore_index=True)
    labels = select_words(labels, max_words)
    return labels, sorted(labels["word"].unique())


# -- the grid -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One work unit: a model, a prompt and a chunk of the candidates."""

    model: str
    prompt_id: str
    chunk: int = 0
    n_chunks: int = 1

    def path(self, parts_dir: Path) -> Path:
        return parts_dir / safe_name(self.model) / f"{self.prompt_id}.{self.chunk:04d}.parquet"


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a model name (``/`` and other odd characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name)


def model_fingerprint(
    spec: models_mod.ModelSpec, params: ScoringParams, words: Sequence[str]
) -> dict[str, Any]:
    """What determines a model's scores; parts made under another fingerprint are discarded."""
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
    }


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


# -- results --------------------------------------------------------------------------------------------------


@dataclass
class ScoringResult:
    """What :func:`run_scoring` produced (``scores``/``tokens`` are None on processes other than rank 0)."""

    output_dir: Path
    scores: pd.DataFrame | None
    tokens: pd.DataFrame | None
    timings: pd.DataFrame
    failures: list[dict[str, Any]]
    units: int
    skipped_units: int
    scored_units: int

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.failures, columns=["model", "step", "prompt_id", "error", "rank"])


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _write_part(path: Path, rows: pd.DataFrame) -> None:
    atomic_write_parquet(rows, path)


def _candidates_for(
    kind: str,
    tokenizer: PreTrainedTokenizerBase,
    split: Any,
    words: Sequence[str],
    vocab: list[Candidate] | None,
) -> list[Candidate]:
    return word_candidates(tokenizer, split, words) if kind == "words" else list(vocab or [])


def _failure(model: str, step: str, exc: BaseException, prompt_id: str | None, rank: int) -> dict[str, Any]:
    log.error("model %s failed at %s%s: %s", model, step, f" ({prompt_id})" if prompt_id else "", exc)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return {
        "model": model,
        "step": step,
        "prompt_id": prompt_id,
        "error": f"{type(exc).__name__}: {exc}",
        "rank": rank,
    }


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cand", disable=not enabled, leave=True, mininterval=10.0)


def run_scoring(
    params: ScoringParams | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
    record: RunRecord | None = None,
    after_unit: Callable[[Unit], None] | None = None,
) -> ScoringResult:
    """Score every (model, prompt, chunk) unit of this process, then (rank 0) merge the whole grid.

    Finished units (their part files) are skipped; a model that fails is reported and skipped; ``barrier``
    synchronizes processes (``accelerate``'s ``wait_for_everyone``) before the merge. ``after_unit`` is
    called after each unit is written (tests use it).
    """
    import torch

    p = params if isinstance(params, ScoringParams) else params_from(params)
    if p.batch_size == 0:
        p.batch_size = "auto"
    check_parameters({**asdict(p)})
    use_registries(p.extra_registry)
    out = Path(output_dir)
    parts_dir = out / PARTS
    parts_dir.mkdir(parents=True, exist_ok=True)
    prompt_table = scores_mod.load_prompts().set_index("prompt_id")
    prompt_ids = p.selected_prompts()
    device = _device(p.device)
    failures: list[dict[str, Any]] = []

    labels, words = corpus_words(p.corpora, p.max_words) if p.candidates == "words" else (None, [])

    # plan: tokenizers (cheap) give the vocabulary size; a model whose tokenizer cannot load fails here
    specs: dict[str, models_mod.ModelSpec] = {}
    n_chunks: dict[str, int] = {}
    vocab_sizes: dict[str, int] = {}
    for name in p.models:
        try:
            spec = _check_rm(name)
            specs[name] = spec
            if p.candidates == "vocab":
                from . import scoring_heads

                if spec.name in scoring_heads.HEAD_RMS:
                    scoring_heads.ensure_head_rm(spec.name)
                n = len(vocab_candidates(models_mod.load_tokenizer(spec)))
                vocab_sizes[name] = n
                n_chunks[name] = max(1, -(-n // p.chunk_size))
        except Exception as exc:
            failures.append(_failure(name, "plan", exc, None, rank))
    planned = [m for m in p.models if m in specs and not any(f["model"] == m for f in failures)]
    units = plan_units(planned, prompt_ids, n_chunks)

    # fingerprints: rank 0 discards stale parts before anyone writes
    fingerprints = {m: model_fingerprint(specs[m], p, words) for m in planned}
    if rank == 0:
        for m, fp in fingerprints.items():
            folder = parts_dir / safe_name(m)
            fp_file = folder / "fingerprint.json"
            if fp_file.is_file() and json.loads(fp_file.read_text(encoding="utf-8")) != fp:
                log.warning("model %s: parameters changed since its parts were written; rescoring it", m)
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(fp_file, (json.dumps(fp, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    if barrier is not None:
        barrier()

    mine = shard(units, rank, world_size)
    todo = [u for u in mine if not u.path(parts_dir).is_file()]
    skipped = len(mine) - len(todo)
    timings: list[dict[str, Any]] = []
    scored = 0
    for name in planned:
        model_units = [u for u in todo if u.model == name]
        if not model_units:
            continue
        t0 = time.perf_counter()
        try:
            model, tok, spec = load_reward_model(
                name,
                dtype=None if p.dtype == "auto" else p.dtype,
                device=device,
                device_map=p.device_map,
            )
            scorer = RewardScorer(
                model,
                tok,
                readout=spec.score_readout or "logits_squeeze",
                method=p.method,
                batch_size=p.batch_size,
                padding_side=spec.padding_side,
            )
        except Exception as exc:
            failures.append(_failure(name, "load", exc, None, rank))
            continue
        load_s = time.perf_counter() - t0
        if record is not None and rank == 0:
            info = models_mod.model_info(
                spec, dtype=str(next(model.parameters()).dtype).replace("torch.", "")
            )
            info.update(device=str(scorer.device), method=scorer.method, score_readout=scorer.readout)
            record.add_model(**info)
        vocab = vocab_candidates(tok) if p.candidates == "vocab" else None
        n_cands = sum(
            (
                len(words)
                if p.candidates == "words"
                else min(p.chunk_size, len(vocab or []) - u.chunk * p.chunk_size)
            )
            for u in model_units
        )
        bar = _progress_bar(n_cands, f"{name} [rank {rank}]" if world_size > 1 else name, progress)
        score_s, n_scored = 0.0, 0
        try:
            for unit in model_units:
                split = split_template(
                    tok, str(prompt_table.loc[unit.prompt_id, "text"]), unit.prompt_id, p.system_prompt
                )
                cands = _candidates_for(p.candidates, tok, split, words, vocab)
                if p.candidates == "vocab":
                    cands = cands[unit.chunk * p.chunk_size : (unit.chunk + 1) * p.chunk_size]
                values = scorer.score(split, [c.ids for c in cands], progress=bar.update)
                score_s += scorer.last_stats.seconds
                n_scored += len(cands)
                part = pd.DataFrame(
                    {
                        "model": name,
                        "prompt_id": unit.prompt_id,
                        "chunk": unit.chunk,
                        "word": [c.text for c in cands],
                        "token_id": pd.array([c.token_id for c in cands], dtype="Int64"),
                        "how": [c.how for c in cands],
                        "n_tokens": [len(c.ids) for c in cands],
                        "token_ids": [list(c.ids) for c in cands],
                        "score": values,
                    }
                )
                if not np.isfinite(values).all():
                    raise ScoringError(f"{int((~np.isfinite(values)).sum())} non-finite score(s)")
                _write_part(unit.path(parts_dir), part)
                scored += 1
                if UNIT_DELAY_ENV in os.environ:  # tests of kill/resume slow the run down
                    time.sleep(float(os.environ[UNIT_DELAY_ENV]))
                if after_unit is not None:
                    after_unit(unit)
        except Exception as exc:
            failures.append(_failure(name, "score", exc, unit.prompt_id, rank))
        finally:
            bar.close()
        timings.append(
            {
                "model": name,
                "rank": rank,
                "load_s": round(load_s, 3),
                "score_s": round(score_s, 3),
                "candidates": n_scored,
                "candidates_per_s": round(n_scored / score_s, 1) if score_s > 0 else float("nan"),
                "method": scorer.method,
                "batch_size": scorer.batch_size,
                "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "device": str(scorer.device),
            }
        )
        del model, scorer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # failures of this rank, for the merge
    fail_dir = out / FAILURES
    fail_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(fail_dir / f"rank{rank}.json", json.dumps(failures, indent=2).encode("utf-8"))
    timing_table = pd.DataFrame(timings)
    atomic_write_parquet(timing_table, out / f"timings.rank{rank}.parquet")
    if barrier is not None:
        barrier()
    if rank != 0:
        return ScoringResult(out, None, None, timing_table, failures, len(units), skipped, scored)

    all_failures = []
    for r in range(world_size):
        f = fail_dir / f"rank{r}.json"
        if f.is_file():
            all_failures += json.loads(f.read_text(encoding="utf-8"))
    timing_table = pd.concat(
        [
            pd.read_parquet(out / f"timings.rank{r}.parquet")
            for r in range(world_size)
            if (out / f"timings.rank{r}.parquet").is_file()
        ],
        ignore_index=True,
    )
    failed = {f["model"] for f in all_failures}
    scores, tokens, missing = merge_parts(out, units, specs, labels, exclude=failed)
    for m in sorted({u.model for u in missing} - failed):
        all_failures.append(
            {
                "model": m,
                "step": "merge",
                "prompt_id": None,
                "error": "parts missing after scoring",
                "rank": 0,
            }
        )
    atomic_write_parquet(scores, out / "scores.parquet")
    atomic_write_parquet(tokens, out / "tokens.parquet")
    atomic_write_parquet(timing_table, out / "timings.parquet")
    if record is not None:
        for name in ("scores.parquet", "tokens.parquet", "timings.parquet"):
            record.outputs.append(name)
        for corpus in p.corpora if p.candidates == "words" else []:
            from . import corpora as corpora_mod

            for ds, sha in corpora_mod.input_checksums([corpus]).items():
                record.add_input(ds, sha)
        from . import data

        record.add_input(scores_mod.PROMPTS_DATASET, data.get(scores_mod.PROMPTS_DATASET).sha256)
        record.extra["failures"] = all_failures
        record.extra["units"] = {"total": len(units), "skipped": skipped, "scored": scored}
    return ScoringResult(out, scores, tokens, timing_table, all_failures, len(units), skipped, scored)


def merge_parts(
    output_dir: str | os.PathLike[str],
    units: Sequence[Unit],
    specs: Mapping[str, models_mod.ModelSpec],
    labels: pd.DataFrame | None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame, pd.DataFrame, list[Unit]]:
    """``(scores, tokens, missing units)`` from the part files of ``units`` (models in ``exclude`` left out).

    Deterministic: parts are read in the grid's order and the tables are sorted, so the result does not
    depend on which process scored which unit or in which order.
    """
    parts_dir = Path(output_dir) / PARTS
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
    if not frames:
        return scores_mod._empty_scores(), pd.DataFrame(columns=PART_COLUMNS), missing
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
    long["framing"] = long["prompt_id"].map(scores_mod.framing_of)
    scores = scores_mod.conform(long)
    scores = scores.sort_values(
        ["model", "prompt_id", "corpus", "category", "word"], kind="stable"
    ).reset_index(drop=True)
    tokens = raw[["model_id", "prompt_id", "word", "token_id", "how", "n_tokens", "token_ids"]].rename(
        columns={"model_id": "model"}
    )
    tokens = tokens.sort_values(["model", "prompt_id", "word"], kind="stable").reset_index(drop=True)
    return scores, tokens, missing


# -- command line ---------------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int, Callable[[], None] | None, str | None]:
    """``(rank, world size, barrier, device)`` under ``accelerate launch`` / torchrun, else ``(0, 1, None, None)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None, None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only: gloo process group
    device = str(state.device) if state.device.type == "cuda" else None
    return state.process_index, state.num_processes, state.wait_for_everyone, device


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m rmvalues.scoring",
        description="Score registered reward models on corpus words x the paper's prompts (live scores).",
    )
    ap.add_argument("--models", nargs="+", required=True, help="registry names (kind: reward-model)")
    ap.add_argument("--corpora", nargs="+", default=["big2_nouns"], help="corpus names (config/corpora.yaml)")
    ap.add_argument("--prompts", nargs="*", default=[], help="prompt ids (default: all 54)")
    ap.add_argument("--candidates", choices=CANDIDATE_KINDS, default="words")
    ap.add_argument("--max-words", type=int, default=None, help="at most N words per corpus (balanced)")
    ap.add_argument("--batch-size", default="auto", help="candidates per forward pass, or 'auto'")
    ap.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="'auto' = the registry's dtype")
    ap.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    ap.add_argument("--method", choices=METHODS, default="auto")
    ap.add_argument("--device-map", default=None, help="e.g. 'auto' for models larger than one device")
    ap.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="vocab ids per work unit")
    ap.add_argument("--system-prompt", default=None)
    ap.add_argument("--output-dir", default=None, help="default: <results>/scoring/<run>")
    ap.add_argument("--run", default="cli", help="run name (output folder under results/scoring)")
    ap.add_argument("--registry", nargs="*", default=[], help="extra registry YAML files")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exits non-zero when any model failed (after scoring the others)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    bs = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    params = ScoringParams(
        models=list(args.models),
        corpora=list(args.corpora),
        prompts=list(args.prompts),
        candidates=args.candidates,
        max_words=args.max_words,
        batch_size=bs,
        dtype=args.dtype,
        device=args.device,
        method=args.method,
        device_map=args.device_map,
        chunk_size=args.chunk_size,
        system_prompt=args.system_prompt,
        extra_registry=list(args.registry),
    )
    try:
        check_parameters(asdict(params))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, world, barrier, dist_device = _distributed()
    if dist_device is not None and params.device in ("auto", "cuda"):
        params.device = dist_device
    out = paths.resolve(args.output_dir) if args.output_dir else paths.stage_dir(STAGE, args.run)
    record = RunRecord(out, stage=STAGE, run=args.run, parameters=asdict(params)) if rank == 0 else None
    result = run_scoring(
        params,
        out,
        rank=rank,
        world_size=world,
        barrier=barrier,
        progress=not args.no_progress,
        record=record,
    )
    if rank == 0:
        if record is not None:
            record.extra["timings"] = result.timings.to_dict("records")
            record.finish()
        n = 0 if result.scores is None else len(result.scores)
        print(
            f"{n} score rows written to {out / 'scores.parquet'} ({result.scored_units} units scored, "
            f"{result.skipped_units} already done)"
        )
        for f in result.failures:
            print(f"FAILED {f['model']} at {f['step']}: {f['error']}", file=sys.stderr)
    return 1 if result.failures else 0


# -- chapter helpers ------------------------------------------------------------------------------------------


def category_medians(scores: pd.DataFrame) -> pd.DataFrame:
    """Median rank per (model, prompt, category) with framing and family (pooled subcategories)."""
    from . import statistics

    return statistics.median_ranks(statistics.rank_scores(scores))


def plot_category_medians(
    medians: pd.DataFrame, corpus: str | None = None, title: str | None = None
) -> Figure:
    """Median rank of each category, by model (colour = family) and framing (one panel per framing)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .statistics import FAMILY_COLORS

    df = medians if corpus is None else medians[medians["corpus"] == corpus]
    framings = [f for f in scores_mod.FRAMINGS if f in set(df["framing"])]
    fig, axes = plt.subplots(1, len(framings), figsize=(5.2 * len(framings), 3.6), sharey=True, squeeze=False)
    palette = {m: FAMILY_COLORS.get(f, "#777777") for m, f in df[["rm", "family"]].drop_duplicates().values}
    for ax, framing in zip(axes[0], framings, strict=True):
        sub = df[df["framing"] == framing]
        sns.stripplot(
            data=sub,
            x="category",
            y="median_rank",
            hue="rm",
            palette=palette,
            dodge=True,
            alpha=0.6,
            size=3,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_title(f"{framing} prompts")
        ax.set_xlabel("")
        ax.set_ylabel("median rank (1 = highest reward)")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.0, 1.0), title="RM (colour = family)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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


def live_vs_published(live: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """For RMs with both live and published scores: Spearman correlation of the scores per prompt and corpus
    (words in both), summarized per model and corpus. Empty when no RM has both."""
    from scipy.stats import spearmanr

    key = ["model", "prompt_id", "corpus", "word"]
    a = live.drop_duplicates(key)[[*key, "score"]]
    b = published.drop_duplicates(key)[[*key, "score"]]
    both = a.merge(b, on=key, suffixes=("_live", "_published"))
    cols = ["model", "corpus", "prompts", "words", "median_spearman", "min_spearman", "max_abs_diff"]
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


def head_table(names: Sequence[str]) -> pd.DataFrame:
    """The fit of each embedded head RM (pairs, penalty, accuracies, time) from its ``rmvalues-head.json``."""
    from . import scoring_heads

    rows = []
    for name in names:
        info = scoring_heads.head_info(name)
        rows.append(
            {
                "model": name,
                "base": info["recipe"]["base"],
                "pairs (train/held-out)": f"{info['pairs']['train']}/{info['pairs']['heldout']}",
                "max tokens": info["recipe"]["max_tokens"],
                "penalty": info["penalty"],
                "train accuracy": round(info["train_accuracy"], 3),
                "held-out accuracy": round(info["heldout_accuracy"], 3),
                "fit seconds": info["seconds"]["total"],
            }
        )
    return pd.DataFrame(rows)


@dataclass
class InputOverview:
    """Examples of token-exact inputs and the result of checking every input (see :func:`input_overview`)."""

    examples: pd.DataFrame
    checks: pd.DataFrame


def input_overview(
    names: Sequence[str],
    prompt_ids: Sequence[str],
    corpora: Sequence[str],
    max_words: int | None = None,
    sample_other_prompts: int = 20,
) -> InputOverview:
    """Token-exactness of the inputs: for each RM, examples from the first prompt, and :func:`check_inputs`
    over every word of the first prompt and ``sample_other_prompts`` words of each other prompt."""
    from .scoring_engine import check_inputs

    _, words = corpus_words(corpora, max_words)
    texts = scores_mod.load_prompts().set_index("prompt_id")["text"]
    examples, checks = [], []
    for name in names:
        tok = models_mod.load_tokenizer(name)
        n_checked, problems, how = 0, [], {}
        for k, pid in enumerate(prompt_ids):
            split = split_template(tok, str(texts[pid]), pid)
            sample = words if k == 0 else words[:: max(1, len(words) // sample_other_prompts)]
            cands = word_candidates(tok, split, sample)
            for c in cands:
                how[c.how] = how.get(c.how, 0) + 1
                for problem in check_inputs(tok, split, c):
                    problems.append(f"{pid}/{c.text}: {problem}")
            n_checked += len(cands)
            if k == 0:
                show = tok.convert_ids_to_tokens(list(split.prefix_ids[-6:]))
                for c in cands[:4]:
                    examples.append(
                        {
                            "model": name,
                            "prefix tokens": len(split.prefix_ids),
                            "prefix ends with": " ".join(map(str, show)),
                            "word": c.text,
                            "word ids": list(c.ids),
                            "word tokens": " ".join(map(str, tok.convert_ids_to_tokens(list(c.ids)))),
                            "suffix": " ".join(map(str, tok.convert_ids_to_tokens(list(split.suffix_ids)))),
                        }
                    )
        checks.append(
            {
                "model": name,
                "inputs checked": n_checked,
                "in-context": how.get("in-context", 0),
                "bare": how.get("bare", 0),
                "problems": len(problems),
                "first problem": problems[0] if problems else "",
            }
        )
    return InputOverview(pd.DataFrame(examples), pd.DataFrame(checks))


def summary_text(medians: pd.DataFrame, result: ScoringResult) -> str:
    """Sentences from the numbers: per RM and framing, the category ranked higher, and the throughput."""
    lines = []
    pooled = medians[medians["analysis"] == "pooled"]
    for (corpus, rm, framing), g in pooled.groupby(["corpus", "rm", "framing"], sort=True, observed=True):
        med = g.groupby("category", observed=True)["median_rank"].median().sort_values()
        if len(med) < 2:
            continue
        best, worst = med.index[0], med.index[-1]
        lines.append(
            f"- **{rm}** ({corpus}, {framing} prompts): {best} words rank higher (median of the prompts' median "
            f"ranks {med.iloc[0]:.1f}) than {worst} words ({med.iloc[-1]:.1f})."
        )
    for row in result.timings.itertuples():
        if row.candidates:
            lines.append(
                f"- {row.model}: {row.candidates} candidates in {row.score_s:.1f} s "
                f"({row.candidates_per_s:.0f}/s, {row.method}, batch {row.batch_size}, {row.dtype}, {row.device})."
            )
    return "\n".join(lines) if lines else "No scores in this run."


def model_table(names: Sequence[str]) -> pd.DataFrame:
    """Registry facts of the scored RMs (one row each), for the chapter."""
    rows = []
    for name in names:
        s = models_mod.get_spec(name)
        rows.append(
            {
                "model": name,
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


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    sys.exit(main())
