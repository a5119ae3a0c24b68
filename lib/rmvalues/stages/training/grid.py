"""The grid: one trained RM per (base model x source x quantity x seed) cell, resumable, registered by name.

* **Data.** Held-out pairs and a training pool per source, eligible under every base model of the grid
  (:func:`prepare_data`; :func:`rmvalues.data.preferences.select_pairs`, with the grid's length rule). Each
  seed draws its own training subsets from the pool, nested within the seed
  (:meth:`rmvalues.data.preferences.PairSelection.subset`).
* **Resume.** Each cell writes its artifacts into ``<output_dir>/cells/<cell>/`` and its model folder into
  ``<output_dir>/models/<cell>/``, then a ``cell.json`` marker with a key of everything that determines it
  (:func:`cell_key`: base model, data ids, settings, seed) and the sha256 of every file of the model folder.
  A rerun skips cells whose marker matches and whose model folder still has those files; a cell without
  marker (interrupted), with another key, or whose model files were changed or deleted is trained again.
* **Held-out pairs.** A head-only cell also stores each held-out pair's margin under its final head
  (``eval.parquet``), so accuracy intervals can resample the pairs.
* **Trajectories.** Every checkpoint after step 0 (step 0 is the randomly drawn head, not a trained RM) is
  scored on the corpus words x prompts with the scoring engine's token-exact inputs (:mod:`.features`), stored
  per cell with a key of the prompts and words. A head-only cell also scores ``NULL_HEADS`` random heads,
  drawn like its initial head in the space it was trained in (``null.parquet``): what an untrained linear
  readout of the same features gives.
* **Registry.** The trained RMs are listed in ``<output_dir>/registry.yaml`` (:mod:`.artifacts`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...core.files import atomic_write_bytes, atomic_write_parquet
from ...core.manifest import ARTEFACTS, Timer, folder_changes, folder_checksums, read_manifest
from ...data import preferences
from ...data.preferences import PairSelection
from ...models.loading import load_sequence_classifier
from ...models.registry import ModelSpec, get_spec
from .analysis import NULL_HEADS, null_gaps, trajectory_table
from .artifacts import registry_entry, save_full_rm, save_head_rm, write_registry
from .config import Cell, GridSpec, TrainingConfig, TrainSettings, check_models, load_config
from .depth import (
    block_state,
    depth_key,
    depth_marker,
    pair_activations,
    restore_blocks,
    train_depth,
    word_activations,
    word_rewards,
)
from .features import (
    WordFeatures,
    checkpoint_rewards,
    digest,
    pair_features,
    word_features_cached,
)
from .params import REGISTRY_FILE
from .reference import probe_check
from .trainer import cell_data, on_gpu, tidy_history, train_reward_model, training_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CELL_MARKER = "cell.json"

__all__ = [
    "CELL_MARKER",
    "CellPaths",
    "GridResult",
    "cell_key",
    "finished",
    "pairs_needed",
    "prepare_data",
    "subset_table",
    "run_grid",
    "train_cell",
]

PairFeatures = Mapping[int, tuple[np.ndarray, np.ndarray]]


def cell_key(
    cell: Cell, base: ModelSpec, settings: TrainSettings, selection: PairSelection
) -> dict[str, Any]:
    """Everything that determines a trained cell (its marker must match for a rerun to skip it)."""
    ids = selection.subset(cell.quantity, cell.seed)
    return {
        "cell": cell.name,
        "model": dataclasses.asdict(base.source) | {"name": base.name, "pad_token": base.pad_token},
        "chat_template": base.chat_template,
        "source": cell.source,
        "source_sha256": selection.sha256,
        "train_ids": selection.digest(ids),
        "eval_ids": selection.digest(selection.eval_ids),
        "settings": {k: v for k, v in settings.probe_dict().items() if k != "feature_batch_size"},
        "seed": cell.seed,
    }


@dataclass
class CellPaths:
    """Where one cell keeps its artifacts (``dir``), its model folder and its marker."""

    root: Path
    cell: Cell

    @property
    def dir(self) -> Path:
        return self.root / "cells" / self.cell.name

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / self.cell.name

    @property
    def marker(self) -> Path:
        return self.dir / CELL_MARKER


def finished(
    cell_paths: CellPaths, key: Mapping[str, Any], recorded: Mapping[str, str] | None = None
) -> bool:
    """Whether a cell's marker exists and matches ``key``, and its model folder is there with the files the
    marker recorded (a marker written before markers recorded them: the files ``recorded`` by the run's last
    manifest, when it lists them)."""
    try:
        marker = json.loads(cell_paths.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("key") != json.loads(json.dumps(key, default=str)):
        return False
    if not (cell_paths.model_dir / "config.json").is_file():
        return False
    files = marker.get("files", recorded)
    if files is None:
        return True
    changes = folder_changes(cell_paths.model_dir, dict(files))
    if changes:
        log.warning(
            "cell %s: model files changed since it was trained (%s); training it again",
            cell_paths.cell.name,
            ", ".join(f"{name} ({how})" for name, how in changes),
        )
    return not changes


def _trajectory_ok(cp: CellPaths, key: Mapping[str, Any]) -> bool:
    try:
        stored = json.loads((cp.dir / "trajectory.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == json.loads(json.dumps(key)) and (cp.dir / "trajectory.parquet").is_file()


def _load_heads(cp: CellPaths) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """A head-only cell's heads per step (on the raw hidden states) and the sd it was trained under."""
    with np.load(cp.dir / "heads.npz") as npz:
        heads = {int(s): npz["heads"][i] for i, s in enumerate(npz["steps"])}
        scale = npz["scale"] if "scale" in npz.files else None
    return heads, scale


def eval_margins(head: np.ndarray, ids: Sequence[int], feats: PairFeatures) -> pd.DataFrame:
    """``pair_id, margin, correct`` of held-out pairs under a head on the raw features (margin = reward of
    chosen - reward of rejected; a tie counts as wrong, as in TRL's accuracy)."""
    w = np.asarray(head, dtype=np.float64)
    margin = np.array([float((feats[i][0].astype(np.float64) - feats[i][1]) @ w) for i in ids])
    return pd.DataFrame({"pair_id": list(ids), "margin": margin, "correct": margin > 0})


def prepare_data(
    spec: GridSpec,
    tokenizers: Mapping[str, PreTrainedTokenizerBase],
    cfg: TrainingConfig | None = None,
) -> dict[str, PairSelection]:
    """Held-out pairs and the training pool (``train_pool`` pairs, default the largest quantity) per source,
    eligible under every base model of the grid, with the grid's length rule."""
    cfg = cfg or load_config()
    s = spec.settings
    out = {}
    for source in spec.sources:
        out[source] = preferences.select_pairs(
            preferences.load_pairs(cfg.sources[source]),
            tokenizers,
            n_eval=s.eval_pairs,
            n_train=s.train_pool or max(spec.quantities),
            max_length=s.max_length,
            data_seed=s.data_seed,
            source=source,
            truncation=s.truncation,
        )
    return out


def subset_table(spec: GridSpec, selections: Mapping[str, PairSelection]) -> pd.DataFrame:
    """``data, quantity, seed, position, pair_id``: the training pairs of every seed and quantity (the same
    for every base model)."""
    rows = [
        {"data": source, "quantity": q, "seed": seed, "position": k, "pair_id": int(i)}
        for source, sel in selections.items()
        for q in spec.quantities
        for seed in spec.seeds
        for k, i in enumerate(sel.subset(q, seed))
    ]
    return pd.DataFrame(rows, columns=["data", "quantity", "seed", "position", "pair_id"])


def pairs_needed(spec: GridSpec, selection: PairSelection) -> list[int]:
    """Every pair a grid's cells of one source use: the held-out pairs, then each seed's largest subset."""
    ids = list(selection.eval_ids)
    seen = set(ids)
    for seed in spec.seeds:
        for i in selection.subset(max(spec.quantities), seed):
            if i not in seen:
                seen.add(i)
                ids.append(i)
    return ids


# -- training one cell -----------------------------------------------------------------------------------------


def _cell_inputs(
    cell: Cell,
    settings: TrainSettings,
    data_ids: tuple[Sequence[int], Sequence[int]],
    base: ModelSpec,
    base_model: PreTrainedModel | None,
    tok: PreTrainedTokenizerBase,
    feats: PairFeatures | None,
) -> tuple[PreTrainedModel, dict[str, Any] | None]:
    """The model a cell trains (the shared frozen base, or a fresh copy for lora/full) and, for head-only
    training with the feature cache, its ``train`` / ``eval`` (chosen, rejected) feature tensors."""
    if settings.method == "head" and settings.feature_cache:
        if feats is None:
            raise ValueError(
                f"cell {cell.name}: head-only training with feature_cache needs the pair features"
            )
        import torch

        def stack(ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
            if not ids:
                return torch.empty(0), torch.empty(0)
            return (
                torch.tensor(np.stack([feats[i][0] for i in ids])),
                torch.tensor(np.stack([feats[i][1] for i in ids])),
            )

        return base_model, {"train": stack(data_ids[0]), "eval": stack(data_ids[1])}
    if settings.method in ("lora", "full"):
        model = load_sequence_classifier(base, tok)  # a fresh copy of the base for every cell
        if on_gpu():
            model.to("cuda")
        return model, None
    return base_model, None


def _eval_curve(history: pd.DataFrame) -> dict[str, float]:
    ev = history[history["split"] == "eval"].sort_values("step")
    if ev.empty:
        return {"eval_accuracy_start": np.nan, "eval_accuracy_end": np.nan, "eval_margin_end": np.nan}
    return {
        "eval_accuracy_start": float(ev["accuracy"].iloc[0]),
        "eval_accuracy_end": float(ev["accuracy"].iloc[-1]),
        "eval_margin_end": float(ev["margin"].iloc[-1]),
    }


def _write_marker(
    cp: CellPaths,
    key: Mapping[str, Any],
    cell: Cell,
    outcome: Any,
    history: pd.DataFrame,
    train_accuracy: float = np.nan,
    extra: Mapping[str, float] | None = None,
) -> None:
    train_hist = history[history["split"] == "train"]
    metrics = {
        **_eval_curve(history),
        "train_loss_end": float(train_hist["loss"].iloc[-1]) if len(train_hist) else np.nan,
        "train_accuracy_end": float(train_hist["accuracy"].iloc[-1]) if len(train_hist) else np.nan,
        "train_accuracy_final": train_accuracy,
        **(extra or {}),
    }
    marker = {
        "key": json.loads(json.dumps(key, default=str)),
        "cell": dataclasses.asdict(cell),
        "registry_name": cell.name,
        "n_pairs_requested": cell.quantity,
        "n_train_used": outcome.n_train_used,
        "n_eval_used": outcome.n_eval_used,
        "steps": int(outcome.trainer.state.global_step),
        "train_seconds": round(outcome.seconds, 3),
        "metrics": metrics,
        "files": folder_checksums(cp.model_dir),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(cp.marker, json.dumps(marker, indent=2).encode("utf-8"))


def train_cell(
    cell: Cell,
    cp: CellPaths,
    key: Mapping[str, Any],
    settings: TrainSettings,
    selection: PairSelection,
    base: ModelSpec,
    base_model: PreTrainedModel | None,
    tok: PreTrainedTokenizerBase,
    feats: PairFeatures | None = None,
) -> None:
    """Train, save and mark one cell (everything written before the marker; the marker last).

    ``base_model``: the shared frozen base (head method); ``feats``: pair id -> (chosen, rejected) last-token
    features (head-only with the feature cache)."""
    shutil.rmtree(cp.dir, ignore_errors=True)
    shutil.rmtree(cp.model_dir, ignore_errors=True)
    cp.dir.mkdir(parents=True)
    data = cell_data(selection, cell.model, cell.quantity, cell.seed)
    model, features = _cell_inputs(
        cell, settings, (data.train_ids, data.eval_ids), base, base_model, tok, feats
    )
    outcome = train_reward_model(model, tok, data, settings, cell.seed, cp.dir, features)
    history = tidy_history(outcome.log_history)
    atomic_write_parquet(history, cp.dir / "history.parquet")
    train_accuracy = np.nan
    check: dict[str, float] = {}
    if settings.method == "head":
        steps = sorted(outcome.heads)
        extra = {"scale": outcome.scale} if outcome.scale is not None else {}
        if feats is not None:
            check, ref = probe_check(
                outcome.heads, outcome.scale, feats, data.train_ids, data.eval_ids, settings.head_l2
            )
            if ref is not None:
                extra["reference"] = ref
        np.savez(
            cp.dir / "heads.npz",
            steps=np.asarray(steps),
            heads=np.stack([outcome.heads[s] for s in steps]),
            **extra,
        )
        if feats is not None:
            last = outcome.heads[steps[-1]]
            train_accuracy = float(eval_margins(last, data.train_ids, feats)["correct"].mean())
            if data.eval_ids:
                atomic_write_parquet(eval_margins(last, data.eval_ids, feats), cp.dir / "eval.parquet")
        save_head_rm(base, base_model, outcome.heads[steps[-1]], tok, cp.model_dir)
        # the shared base must stay untouched for the next cell
        base_model.score.weight.requires_grad_(False)
    else:
        save_full_rm(outcome.model, tok, cp.model_dir)
    shutil.rmtree(cp.dir / "trainer" / "runs", ignore_errors=True)
    _write_marker(cp, key, cell, outcome, history, train_accuracy, check)


# -- the grid ---------------------------------------------------------------------------------------------------


@dataclass
class GridResult:
    """Tables of one grid run (the chapter's data)."""

    grid: GridSpec
    cells: pd.DataFrame  # one row per cell: status, times, n pairs, final metrics, registry name
    data: pd.DataFrame  # one row per source: eligibility counts
    history: pd.DataFrame  # per cell and step: train/eval loss, accuracy, margin
    trajectories: pd.DataFrame  # long scores table per cell and checkpoint after step 0
    registry: Path
    eval_pairs: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # cell, pair_id, margin, correct (head-only)
    subsets: pd.DataFrame = field(default_factory=pd.DataFrame)  # data, quantity, seed, pair_id
    null: pd.DataFrame = field(default_factory=pd.DataFrame)  # random-head gaps per cell (head-only)
    timings: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # ``preferences:<source>`` -> sha256 of its file


@dataclass
class _Grid:
    """One run of a grid: its inputs and what is left to do."""

    spec: GridSpec
    root: Path
    bases: dict[str, ModelSpec]
    tokenizers: dict[str, PreTrainedTokenizerBase]
    selections: dict[str, PairSelection]
    labels: pd.DataFrame
    prompts: pd.DataFrame
    words: list[str]
    timer: Timer
    progress: bool
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    todo: list[Cell] = field(default_factory=list)
    depth_todo: list[Cell] = field(default_factory=list)
    traj_key: dict[str, Any] = field(default_factory=dict)

    @property
    def cells(self) -> list[Cell]:
        return self.spec.cells()

    @property
    def depth_cells(self) -> list[Cell]:
        return self.spec.depth_cells()

    def probe_of(self, cell: Cell) -> Cell:
        """The probe (k = 0) trained on the same pairs and seed as a depth cell."""
        return dataclasses.replace(cell, depth=0)


def _frozen_base(
    g: _Grid, name: str, todo: Sequence[Cell], dtodo: Sequence[Cell] = ()
) -> tuple[PreTrainedModel | None, WordFeatures | None, dict[str, PairFeatures], dict[str, Any]]:
    """Head-only grids: the frozen base (one serves every cell), its word features, pair features and (with
    depth cells to train) the activations below the top blocks. The activations' pass of the frozen base over
    the pairs also gives the pair features, so the depth arm adds no second pass over the pairs."""
    settings = g.spec.settings
    if settings.method != "head":
        return None, None, {}, {}
    tok, base = g.tokenizers[name], g.bases[name]
    with g.timer.step(f"load {name}"):
        base_model = load_sequence_classifier(base, tok)
        if on_gpu():
            base_model.to("cuda")
    with g.timer.step(f"word features {name}"):
        wf = word_features_cached(base_model, tok, base, g.prompts, g.words, g.root)
    pair_feats: dict[str, PairFeatures] = {}
    acts: dict[str, Any] = {}
    depths = sorted({c.depth for c in dtodo})
    for source in sorted({c.source for c in [*todo, *dtodo]}):
        sel = g.selections[source]
        probes = settings.feature_cache and any(c.source == source for c in todo)
        ids = pairs_needed(g.spec, sel) if probes else []
        computed: dict[int, Any] = {}
        if any(c.source == source for c in dtodo):
            deep = {i for c in dtodo if c.source == source for i in sel.subset(c.quantity, c.seed)}
            ids_d = ids + sorted(deep - set(ids)) if ids else list(sel.eval_ids) + sorted(deep)
            with g.timer.step(f"pair-activations {name}"):
                acts[source], computed = pair_activations(
                    base_model, tok, base, sel, ids_d, g.root, depths, settings.feature_batch_size
                )
        if probes:
            with g.timer.step(f"pair features {name}"):
                pair_feats[source] = pair_features(
                    base_model, tok, base, sel, ids, g.root, settings.feature_batch_size, g.progress, computed
                )
    return base_model, wf, pair_feats, acts


def _write_trajectory(g: _Grid, cell: Cell, cp: CellPaths, wf: WordFeatures | None) -> None:
    """Score every checkpoint after step 0 of a cell on the words (head-only: features times each stored
    head, and the random-head null)."""
    family = g.bases[cell.model].family
    if wf is not None:
        heads, scale = _load_heads(cp)
        steps = [s for s in sorted(heads) if s > 0]
        rewards = wf.rewards(np.stack([heads[s] for s in steps]))
        traj = trajectory_table(cell, family, steps, rewards, g.words, g.labels, wf.n_tokens)
        null = null_gaps(cell, family, wf, scale, g.labels)
        if null is not None:
            atomic_write_parquet(null, cp.dir / "null.parquet")
    else:
        ckpts = {
            int(p.name.split("-")[1]): p
            for p in (cp.dir / "trainer").glob("checkpoint-*")
            if int(p.name.split("-")[1]) > 0
        }
        steps, rewards = checkpoint_rewards(
            g.bases[cell.model], ckpts, g.tokenizers[cell.model], g.prompts, g.words
        )
        traj = trajectory_table(cell, family, steps, rewards, g.words, g.labels)
    atomic_write_parquet(traj, cp.dir / "trajectory.parquet")
    atomic_write_bytes(cp.dir / "trajectory.json", json.dumps(g.traj_key).encode("utf-8"))


def _run_model(g: _Grid, name: str, bar: Any) -> None:
    """Train the unfinished cells of one base model and score the checkpoints that need it."""
    mcells = [c for c in g.cells if c.model == name]
    need_traj = [c for c in mcells if not _trajectory_ok(CellPaths(g.root, c), g.traj_key)]
    mtodo = [c for c in g.todo if c.model == name]
    dtodo = [c for c in g.depth_todo if c.model == name]
    bar.update(len(mcells) - len(set(mtodo) | set(need_traj)))
    if not mtodo and not need_traj and not dtodo:
        return
    base_model, wf, pair_feats, acts = _frozen_base(g, name, mtodo, dtodo)
    for cell in mcells:
        cp = CellPaths(g.root, cell)
        if cell in mtodo:
            with g.timer.step(f"train {cell.name}"):
                train_cell(
                    cell,
                    cp,
                    g.keys[cell.name],
                    g.spec.settings,
                    g.selections[cell.source],
                    g.bases[name],
                    base_model,
                    g.tokenizers[name],
                    pair_feats.get(cell.source),
                )
        if cell in mtodo or cell in need_traj:
            with g.timer.step(f"trajectory {cell.name}"):
                _write_trajectory(g, cell, cp, wf)
            bar.update(1)
    if dtodo:
        _run_depth(g, name, base_model, dtodo, acts)


def _depth_key(g: _Grid, cell: Cell) -> dict[str, Any]:
    return depth_key(g.keys[g.probe_of(cell).name], cell, g.spec.settings) | {"trajectory": g.traj_key}


def _depth_done(g: _Grid, cell: Cell) -> bool:
    cp = CellPaths(g.root, cell)
    try:
        marker = json.loads(cp.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        marker["key"] == json.loads(json.dumps(_depth_key(g, cell)))
        and (cp.dir / "trajectory.parquet").is_file()
    )


def _run_depth(
    g: _Grid, name: str, base_model: PreTrainedModel, todo: Sequence[Cell], acts: Mapping[str, Any]
) -> None:
    """Train and score the depth cells of one base model (after its probes, whose reference heads they start
    from), from activations below the top blocks computed once per pair (``acts``: source -> depth -> pair
    id -> (chosen, rejected), :func:`_frozen_base`) and word."""
    from ...engine.topblocks import TopBlocks

    settings, tok = g.spec.settings, g.tokenizers[name]
    depths = sorted({c.depth for c in todo})
    with g.timer.step(f"word-activations {name}"):
        words, prefix_lengths = word_activations(
            base_model, tok, g.bases[name], g.prompts, g.words, g.root, depths, settings.feature_batch_size
        )
    for cell in todo:
        with g.timer.step(f"train {cell.name}"):
            top = TopBlocks(base_model, cell.depth)
            saved = block_state(top)
            try:
                _train_depth_cell(
                    g, cell, top, acts[cell.source][cell.depth], words[cell.depth], prefix_lengths
                )
            finally:
                restore_blocks(top, saved)


def _train_depth_cell(g: _Grid, cell: Cell, top: Any, acts: Any, words: Any, prefix_lengths: Any) -> None:
    cp = CellPaths(g.root, cell)
    shutil.rmtree(cp.dir, ignore_errors=True)
    cp.dir.mkdir(parents=True)
    settings, tok = g.spec.settings, g.tokenizers[cell.model]
    sel = g.selections[cell.source]
    train_ids, eval_ids = list(sel.subset(cell.quantity, cell.seed)), list(sel.eval_ids)
    with np.load(CellPaths(g.root, g.probe_of(cell)).dir / "heads.npz") as npz:
        head = npz["reference"] if "reference" in npz.files else npz["heads"][-1]
        scale = npz["scale"] if "scale" in npz.files else np.ones_like(head)
    penalty = settings.head_l2 * np.asarray(scale, np.float64) ** 2 if settings.head_l2 > 0 else None
    out = train_depth(cell, settings, top, acts, train_ids, eval_ids, head, penalty, tok, cp.dir)
    atomic_write_parquet(out.history, cp.dir / "history.parquet")
    if eval_ids:
        atomic_write_parquet(out.eval, cp.dir / "eval.parquet")
    steps, rewards = word_rewards(top, out.states, words, tok.pad_token_id, prefix_lengths)
    family = g.bases[cell.model].family
    traj = trajectory_table(cell, family, steps, rewards, g.words, g.labels)
    traj["depth"] = cell.depth
    atomic_write_parquet(traj, cp.dir / "trajectory.parquet")
    marker = depth_marker(out, _depth_key(g, cell), cell, len(train_ids), len(eval_ids))
    atomic_write_bytes(cp.marker, json.dumps(marker, indent=2).encode("utf-8"))


def _collect(g: _Grid) -> GridResult:
    """Every cell's stored marker, history and trajectory in one set of tables; the registry file."""
    rows, histories, trajs, entries, evals, nulls = [], [], [], {}, [], []
    for cell in g.cells + g.depth_cells:
        cp = CellPaths(g.root, cell)
        marker = json.loads(cp.marker.read_text(encoding="utf-8"))
        hist = pd.read_parquet(cp.dir / "history.parquet")
        hist.insert(0, "cell", cell.name)
        histories.append(hist)
        traj = pd.read_parquet(cp.dir / "trajectory.parquet")
        traj["method"], traj["depth"] = cell.arm, cell.depth  # trajectories stored before the depth arm
        trajs.append(traj)
        for name, frames in (("eval.parquet", evals), ("null.parquet", nulls)):
            if (cp.dir / name).is_file():
                df = pd.read_parquet(cp.dir / name)
                if "cell" not in df.columns:
                    df.insert(0, "cell", cell.name)
                frames.append(df)
        if not cell.depth:  # the probes are the run's registered RMs
            entries[cell.name] = registry_entry(cell, g.bases[cell.model], cp.model_dir, g.spec.settings)
        rows.append(
            {
                "cell": cell.name,
                "base_model": cell.model,
                "family": g.bases[cell.model].family,
                "data": cell.source,
                "method": cell.arm,
                "depth": cell.depth,
                "quantity": cell.quantity,
                "seed": cell.seed,
                "status": "trained now" if cell in g.todo or cell in g.depth_todo else "reused",
                **{k: marker[k] for k in ("n_train_used", "n_eval_used", "steps", "train_seconds")},
                **marker["metrics"],
            }
        )
    return GridResult(
        grid=g.spec,
        cells=pd.DataFrame(rows),
        data=pd.DataFrame([sel.summary() for sel in g.selections.values()]),
        history=pd.concat(histories, ignore_index=True),
        trajectories=pd.concat(trajs, ignore_index=True),
        eval_pairs=pd.concat(evals, ignore_index=True) if evals else pd.DataFrame(),
        subsets=subset_table(g.spec, g.selections),
        null=pd.concat(nulls, ignore_index=True) if nulls else pd.DataFrame(),
        registry=write_registry(entries, g.root / REGISTRY_FILE),
        timings=g.timer.seconds,
        inputs={f"preferences:{s.source}": s.sha256 for s in g.selections.values() if s.sha256},
    )


def run_grid(
    spec: GridSpec,
    output_dir: str | os.PathLike[str],
    labels: pd.DataFrame,
    prompts: pd.DataFrame,
    *,
    extra_registry: Sequence[str | os.PathLike[str]] = (),
    config: TrainingConfig | None = None,
    timer: Timer | None = None,
    progress: bool = False,
) -> GridResult:
    """Train every unfinished cell of ``spec``, register the RMs and score all checkpoints on the words of
    ``labels`` (``corpus, word, category, subcategory``, e.g. :func:`rmvalues.data.scores.labels_of` of the
    corpora stage's output) under ``prompts`` (``prompt_id, text`` rows, in order).

    Base models are resolved in ``config/models.yaml`` and the ``extra_registry`` files. Bad input is refused
    before any training: unknown base models, pad = eos, data files with missing columns or empty pairs,
    quantities larger than the eligible data. Finished cells (marker matches) are skipped; their stored
    history and trajectories are reused. ``timer`` receives the seconds per step (data, loading, features,
    training and trajectories per cell).
    """
    from tqdm import tqdm

    cfg = config or load_config()
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    timer = timer if timer is not None else Timer()
    check_models(spec.models, [str(f) for f in extra_registry])
    bases = {m: get_spec(m, extra=extra_registry) for m in spec.models}
    with timer.step("data"):
        tokenizers = {m: training_tokenizer(bases[m]) for m in spec.models}
        selections = prepare_data(spec, tokenizers, cfg)
    words = sorted(labels["word"].unique())
    g = _Grid(spec, root, bases, tokenizers, selections, labels, prompts, words, timer, progress)
    g.keys = {c.name: cell_key(c, bases[c.model], spec.settings, selections[c.source]) for c in g.cells}
    recorded = (read_manifest(root) or {}).get(ARTEFACTS) or {}
    g.todo = [
        c
        for c in g.cells
        if not finished(CellPaths(root, c), g.keys[c.name], recorded.get(f"models/{c.name}"))
    ]
    g.traj_key = {
        "prompts": list(prompts["prompt_id"]),
        "words_digest": digest(words),
        "corpus": _corpus(labels),
        "from_step": 1,  # step 0 (the randomly drawn head) is not scored
        "null_heads": NULL_HEADS,
    }
    g.depth_todo = [c for c in g.depth_cells if g.probe_of(c) in g.todo or not _depth_done(g, c)]
    log.info("grid %s: %d cells, %d to train", spec.name, len(g.cells), len(g.todo))
    bar = tqdm(total=len(g.cells), desc=f"grid {spec.name}", unit="cell", disable=not progress)
    for name in spec.models:
        _run_model(g, name, bar)
    bar.close()
    return _collect(g)


def _corpus(labels: pd.DataFrame) -> str:
    """The corpus of the words (the trajectory key names it, as before)."""
    names = sorted(labels["corpus"].unique())
    return names[0] if len(names) == 1 else ",".join(names)
