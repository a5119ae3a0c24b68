"""Scoring this process's share of the grid: plan the units, load each RM once, score its units, write
each unit's part file as soon as it is scored, and hand failures and timings to process 0 for the merge.

**Failures** are per model: a model that fails to plan, load or score is reported (a row of the failure table)
and the others continue. **Sharding**: under ``accelerate launch`` or ``torchrun`` each process scores
``units[rank::world_size]`` (:class:`Shard`); process 0 merges after a barrier.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...core.files import atomic_write_bytes, atomic_write_parquet
from ...engine.inputs import (
    Candidate,
    ScoringError,
    TemplateSplit,
    split_template,
    vocab_candidates,
    word_candidates,
)
from ...engine.reward import RewardScorer
from ...models.loading import load_reward_model, load_tokenizer, model_info
from ...models.registry import ModelSpec, RegistryError, get_spec
from .grid import FAILURES, Unit, plan_units
from .params import Params

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Seconds to sleep after each written unit (only for tests that kill a run part-way).
UNIT_DELAY_ENV = "RMVALUES_SCORING_UNIT_DELAY"
#: Columns of the failure table.
FAILURE_COLUMNS = ["model", "step", "prompt_id", "error", "rank"]

__all__ = [
    "FAILURE_COLUMNS",
    "UNIT_DELAY_ENV",
    "GridPlan",
    "ModelRun",
    "Shard",
    "Worker",
    "failure",
    "gather_rank_files",
    "plan_grid",
    "write_rank_files",
]


@dataclass(frozen=True)
class Shard:
    """This process's place among the scoring processes (one process: the defaults).

    ``barrier`` synchronizes the processes (``accelerate``'s ``wait_for_everyone``); ``device`` is the
    process's own device under a launcher (it replaces ``device='auto'``/``'cuda'``)."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] | None = None
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Wait for every process (no-op for one process)."""
        if self.barrier is not None:
            self.barrier()


def failure(model: str, step: str, exc: BaseException, prompt_id: str | None, rank: int) -> dict[str, Any]:
    """One row of the failure table (logged with its traceback at debug level)."""
    log.error("model %s failed at %s%s: %s", model, step, f" ({prompt_id})" if prompt_id else "", exc)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return {
        "model": model,
        "step": step,
        "prompt_id": prompt_id,
        "error": f"{type(exc).__name__}: {exc}",
        "rank": rank,
    }


@dataclass
class GridPlan:
    """The grid of a run: the registry entries of the models planned, the units, and the plan failures."""

    specs: dict[str, ModelSpec]
    units: list[Unit]
    failures: list[dict[str, Any]] = field(default_factory=list)


def plan_grid(params: Params, prompt_ids: Sequence[str], rank: int = 0) -> GridPlan:
    """Resolve each RM in the registry (the training run's registry and ``extra_registry`` included) and, in
    vocab mode, count its vocabulary chunks from its tokenizer; a model that fails here is a plan failure."""
    extra = params.registry_files()
    specs: dict[str, ModelSpec] = {}
    n_chunks: dict[str, int] = {}
    failures: list[dict[str, Any]] = []
    for name in params.models:
        try:
            spec = get_spec(name, extra=extra)
            if spec.kind != "reward-model":
                raise RegistryError(f"model {name!r} is a {spec.kind}, not a reward model")
            if params.candidates == "vocab":
                n = len(vocab_candidates(load_tokenizer(spec)))
                n_chunks[name] = max(1, -(-n // params.chunk_size))
            specs[name] = spec
        except Exception as exc:
            failures.append(failure(name, "plan", exc, None, rank))
    return GridPlan(specs, plan_units(list(specs), prompt_ids, n_chunks), failures)


@dataclass
class ModelRun:
    """What scoring one model's units on this process gave."""

    model: str
    scored_units: int = 0
    timing: dict[str, Any] | None = None
    info: dict[str, Any] | None = None  # provenance for the manifest
    failure: dict[str, Any] | None = None


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cand", disable=not enabled, leave=True, mininterval=10.0)


def _dtype_of(model: Any) -> str:
    return str(next(model.parameters()).dtype).replace("torch.", "")


@dataclass
class Worker:
    """Scores this process's units, model by model (each RM loaded once), writing one part file per unit."""

    params: Params
    words: list[str]
    prompts: Mapping[str, str]  # prompt id -> prompt text
    parts_dir: Path
    shard: Shard = field(default_factory=Shard)
    progress: bool = True
    after_unit: Callable[[Unit], None] | None = None

    @property
    def device(self) -> str:
        if self.shard.device is not None and self.params.device in ("auto", "cuda"):
            return self.shard.device
        if self.params.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.params.device

    def load(self, spec: ModelSpec) -> RewardScorer:
        """The RM as a :class:`RewardScorer` (dtype, method, batch size and device of the parameters)."""
        p = self.params
        model, tok, spec = load_reward_model(
            spec, dtype=None if p.dtype == "auto" else p.dtype, device=self.device, device_map=p.device_map
        )
        return RewardScorer(
            model,
            tok,
            readout=spec.score_readout or "logits_squeeze",
            method=p.method,
            batch_size=p.batch_size,
            padding_side=spec.padding_side,
        )

    def candidates(
        self, tok: PreTrainedTokenizerBase, unit: Unit, vocab: list[Candidate] | None
    ) -> tuple[TemplateSplit, list[Candidate]]:
        """The unit's template split and candidates (the words, or its chunk of the vocabulary)."""
        split = split_template(tok, self.prompts[unit.prompt_id], unit.prompt_id, self.params.system_prompt)
        if vocab is None:
            return split, word_candidates(tok, split, self.words)
        size = self.params.chunk_size
        return split, vocab[unit.chunk * size : (unit.chunk + 1) * size]

    def score_unit(self, scorer: RewardScorer, unit: Unit, vocab: list[Candidate] | None, bar: Any) -> int:
        """Score one unit and write its part file atomically; returns the number of candidates."""
        split, cands = self.candidates(scorer.tokenizer, unit, vocab)
        values = scorer.score(split, [c.ids for c in cands], progress=bar.update)
        part = pd.DataFrame(
            {
                "model": unit.model,
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
        atomic_write_parquet(part, unit.path(self.parts_dir))
        if UNIT_DELAY_ENV in os.environ:  # tests of kill/resume slow the run down
            time.sleep(float(os.environ[UNIT_DELAY_ENV]))
        if self.after_unit is not None:
            self.after_unit(unit)
        return len(cands)

    def _n_candidates(self, units: Sequence[Unit], vocab: list[Candidate] | None) -> int:
        if vocab is None:
            return len(self.words) * len(units)
        size = self.params.chunk_size
        return sum(min(size, len(vocab) - u.chunk * size) for u in units)

    def score_model(self, spec: ModelSpec, units: Sequence[Unit]) -> ModelRun:
        """Load one RM and score its units; a failure ends this model only (reported in the result)."""
        rank, out = self.shard.rank, ModelRun(spec.name)
        t0 = time.perf_counter()
        try:
            scorer = self.load(spec)
        except Exception as exc:
            out.failure = failure(spec.name, "load", exc, None, rank)
            return out
        load_s = time.perf_counter() - t0
        dtype = _dtype_of(scorer.model)
        out.info = {
            **model_info(spec, dtype=dtype),
            "device": str(scorer.device),
            "method": scorer.method,
            "score_readout": scorer.readout_name,
        }
        vocab = vocab_candidates(scorer.tokenizer) if self.params.candidates == "vocab" else None
        desc = f"{spec.name} [rank {rank}]" if self.shard.world_size > 1 else spec.name
        bar = _progress_bar(self._n_candidates(units, vocab), desc, self.progress)
        score_s, n_scored = 0.0, 0
        try:
            for unit in units:
                n_scored += self.score_unit(scorer, unit, vocab, bar)
                score_s += scorer.last_stats.seconds
                out.scored_units += 1
        except Exception as exc:
            out.failure = failure(spec.name, "score", exc, unit.prompt_id, rank)
        finally:
            bar.close()
        out.timing = {
            "model": spec.name,
            "rank": rank,
            "load_s": round(load_s, 3),
            "score_s": round(score_s, 3),
            "candidates": n_scored,
            "candidates_per_s": round(n_scored / score_s, 1) if score_s > 0 else float("nan"),
            "method": scorer.method,
            "batch_size": scorer.batch_size,
            "dtype": dtype,
            "device": str(scorer.device),
        }
        return out

    def run(self, plan: GridPlan, todo: Sequence[Unit]) -> list[ModelRun]:
        """Score the units ``todo`` (this process's unfinished units), one model after the other."""
        import torch

        runs = []
        for name, spec in plan.specs.items():
            units = [u for u in todo if u.model == name]
            if units:
                runs.append(self.score_model(spec, units))
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return runs


def write_rank_files(
    output_dir: Path, rank: int, failures: list[dict[str, Any]], timings: pd.DataFrame
) -> None:
    """This process's failures and timings, for process 0's merge (``failures/rank<r>.json``,
    ``timings.rank<r>.parquet``)."""
    fail_dir = output_dir / FAILURES
    fail_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(fail_dir / f"rank{rank}.json", json.dumps(failures, indent=2).encode("utf-8"))
    atomic_write_parquet(timings, output_dir / f"timings.rank{rank}.parquet")


def gather_rank_files(output_dir: Path, world_size: int) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every process's failures and timings (process 0, after the barrier), in rank order."""
    failures: list[dict[str, Any]] = []
    frames = []
    for r in range(world_size):
        f = output_dir / FAILURES / f"rank{r}.json"
        if f.is_file():
            failures += json.loads(f.read_text(encoding="utf-8"))
        t = output_dir / f"timings.rank{r}.parquet"
        if t.is_file():
            frames.append(pd.read_parquet(t))
    return failures, pd.concat(frames, ignore_index=True)
