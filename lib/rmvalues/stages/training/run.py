"""Chapter 4, training ablations: reward models trained from different base models on identical preference data.

The paper's causal evidence (Christian et al. 2026, Sec. 5, Figs. 4-5): RMs trained from different base models
with identical data and settings still differ in agency vs communion. ``run(params)`` runs that experiment as a
grid, **base models x preference sources x quantities x seeds** (``config/training.yaml``, :mod:`.config`),
for any registered causal LM and any preference data, through TRL's ``RewardTrainer`` (:mod:`.trainer`,
:mod:`.grid`), measures held-out accuracy with intervals (:mod:`.metrics`), scores every checkpoint after
step 0 on the words of the corpora run (:mod:`.features`), analyses the trajectories across seeds against a
random-head null and compares base models at matched quantities (:mod:`.analysis`), compares them with the
paper's released runs (:mod:`.paper`) and checks that a trained RM loads by name from the run's
``registry.yaml`` and scores identically.

Outputs: ``cells``, ``data``, ``bases``, ``accuracy``, ``eval_pairs``, ``history``, ``trajectories``,
``category_trajectories``, ``seed_summary``, ``gaps``, ``null_gaps``, ``final_gaps``, ``base_comparison`` (two
or more base models), ``word_movers``, ``paper_files``, ``paper_training_gaps`` and ``paper_vs_ours``
(``.parquet``), the trained RMs' ``registry.yaml`` (read by the scoring stage), the chapter's tables as CSV
downloads (``tables/<name>.csv``, :data:`READER_TABLES`), the chapter's answers ``findings.json`` and a
``manifest.json``; the trained model folders (``models/<rm>``: weights, config, tokenizer files; every file's
sha256 is in the manifest's ``artefacts``, checked before the run is skipped and before another stage loads
the RM), cell artifacts and feature caches live beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core.errors import RmvaluesError
from ...core.findings import Finding, write_findings
from ...core.manifest import RunRecord, Timer
from ...data.corpora import read_corpora_table
from ...data.prompts import prompt_table, prompts_checksum, select_prompts
from ...data.scores import labels_of
from ...models.loading import (
    ensure_local,
    folder_errors,
    load_reward_model,
    load_tokenizer,
    model_info,
    quiet_transformers,
)
from ...models.registry import ModelSpec, get_spec
from . import analysis, depth_analysis, metrics, paper
from .config import GridSpec
from .features import score_model_words
from .findings import findings as chapter_findings
from .grid import run_grid
from .params import REGISTRY_FILE, Params

__all__ = ["CONSISTENCY_TOLERANCE", "READER_TABLES", "ConsistencyError", "Results", "run"]

#: Largest difference allowed between a registered RM's live rewards and its trajectory's last checkpoint.
CONSISTENCY_TOLERANCE = 1e-3


class ConsistencyError(RmvaluesError, RuntimeError):
    """A trained RM loaded by name does not reproduce the rewards of its last checkpoint."""


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`)."""

    params: Params
    spec: GridSpec
    data: pd.DataFrame  # one row per preference source: eligibility counts
    cells: pd.DataFrame  # one row per trained RM: status, pairs used, steps, time, held-out metrics (Wilson)
    history: pd.DataFrame  # per cell and step: train/eval loss, accuracy, margin
    trajectories: pd.DataFrame  # long scores table per cell and checkpoint after step 0
    registry: Path  # the run's registry.yaml of trained RMs
    timings: dict[str, float]  # seconds per grid step (data, load, features, train, trajectory)
    words_origin: str  # the corpora run's table the words come from
    bases: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # one row per base model: what differs besides it
    eval_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # cell, pair_id, margin, correct
    subsets: pd.DataFrame = field(default_factory=pd.DataFrame)  # data, quantity, seed, position, pair_id
    accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)  # per base and quantity across seeds
    null: pd.DataFrame = field(default_factory=pd.DataFrame)  # random-head gaps per cell (null_gaps)
    final: pd.DataFrame = field(default_factory=pd.DataFrame)  # final_gaps: last checkpoint, across seeds
    categories: pd.DataFrame = field(default_factory=pd.DataFrame)  # category_trajectories
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed_summary
    gaps: pd.DataFrame | None = None  # None when the corpus lacks Agency or Communion
    comparison: pd.DataFrame | None = None  # base_comparison; None with one base model
    accuracy_comparison: pd.DataFrame = field(default_factory=pd.DataFrame)  # accuracy_differences
    depth_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)  # depth_analysis.depth_gaps
    depth_accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)  # depth_analysis.depth_accuracy
    movers: pd.DataFrame = field(default_factory=pd.DataFrame)  # word_movers
    paper: pd.DataFrame = field(default_factory=pd.DataFrame)  # the paper's released trajectories
    paper_files: pd.DataFrame = field(default_factory=pd.DataFrame)
    paper_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    paper_vs_ours: pd.DataFrame | None = None
    consistency: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # findings.json (the findings page)
    seconds: float = 0.0
    output_dir: Path | None = None  # the run's output folder (the CSV downloads are in its tables/)

    def csv(self, name: str) -> Path:
        """The CSV download of one of the chapter's tables (:data:`READER_TABLES`)."""
        root = self.output_dir if self.output_dir is not None else self.registry.parent
        return root / "tables" / f"{name}.csv"

    def reader_tables(self) -> dict[str, pd.DataFrame]:
        """The chapter's tables by download name (:data:`READER_TABLES`), flat (no index); an empty table where
        the run has none (one base model, no Agency/Communion gap)."""

        def table(df: pd.DataFrame | None) -> pd.DataFrame:
            return df if df is not None else pd.DataFrame()

        return {
            "settings": self.settings_table.reset_index().rename(columns={"index": "setting"}),
            "data": self.data,
            "cells": self.cells,
            "bases": self.bases,
            "accuracy": self.accuracy,
            "final_gaps": self.final,
            "base_comparison": table(self.comparison),
            "accuracy_comparison": self.accuracy_comparison,
            "depth_gaps": self.depth_gaps,
            "depth_accuracy": self.depth_accuracy,
            "mover_balance": self.mover_balance,
            "word_movers": self.movers,
            "paper_files": self.paper_files,
            "paper_vs_ours": table(self.paper_vs_ours),
            "consistency": pd.DataFrame([self.consistency]) if self.consistency else pd.DataFrame(),
            "timings": self.timing_table,
        }

    def probes(self) -> Results:
        """The run restricted to its probes (k = 0: nothing of the base adapted), the registered RMs the
        chapter's main comparison is about; the depth arm is shown on its own."""
        import dataclasses

        method = self.spec.settings.method

        def keep(df: pd.DataFrame | None, col: str = "method") -> pd.DataFrame | None:
            if df is None or df.empty or col not in df.columns:
                return df
            return df[df[col] == method].reset_index(drop=True)

        return dataclasses.replace(
            self,
            cells=keep(self.cells),
            history=self.history[self.history["cell"].isin(keep(self.cells)["cell"])],
            trajectories=keep(self.trajectories),
            accuracy=keep(self.accuracy),
            final=keep(self.final),
            categories=keep(self.categories),
            summary=keep(self.summary),
            gaps=keep(self.gaps),
            comparison=keep(self.comparison),
            accuracy_comparison=keep(self.accuracy_comparison),
        )

    @property
    def settings_table(self) -> pd.DataFrame:
        """The grid and its settings as one column (LoRA settings only for LoRA grids)."""
        s = self.spec
        row = {
            "grid": s.name,
            **{axis: ", ".join(map(str, values)) for axis, values in s.axes().items()},
            **{
                k: v
                for k, v in s.settings.as_dict().items()
                if not k.startswith("lora") or s.settings.method == "lora"
            },
        }
        return pd.DataFrame([row]).T.rename(columns={0: "value"})

    @property
    def n_words(self) -> int:
        """Words every checkpoint is scored on."""
        return int(self.trajectories["word"].nunique())

    @property
    def mover_balance(self) -> pd.DataFrame:
        """How many top risers and fallers are Agency or Communion words (:func:`.analysis.mover_balance`)."""
        return analysis.mover_balance(self.movers)

    @property
    def timing_table(self) -> pd.DataFrame:
        """Seconds per kind of work and base model (:func:`.analysis.timing_summary`)."""
        return analysis.timing_summary(self.timings, self.spec.models)


def _read_words(params: Params, record: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The corpus words and labels of the corpora run (verified hand-off) and the prompts in the design's
    order: ``(labels, prompts, origin)``."""
    with record.timed("read inputs"):
        table, sums = read_corpora_table(params.corpora_input(), params.results_root, [params.corpus])
        labels = labels_of(table, [params.corpus])
        prompts = prompt_table(select_prompts(params.prompts))
    record.add_inputs(sums)
    record.add_inputs(prompts_checksum())
    return labels, prompts, next(iter(sums))


def _train(
    params: Params, record: RunRecord, labels: pd.DataFrame, prompts: pd.DataFrame, origin: str
) -> Results:
    """Train the grid (resuming finished cells); record its data, base models, seeds and registry."""
    spec = params.grid_spec()
    with record.timed("grid"):
        grid = run_grid(
            spec,
            record.output_dir,
            labels,
            prompts,
            extra_registry=params.extra_registry,
            timer=Timer(parent=record.timer, prefix="grid: "),
        )
    record.add_inputs(grid.inputs)
    for m in spec.models:
        record.add_model(**model_info(get_spec(m, extra=params.extra_registry)))
    record.seeds.update({c.name: c.seed for c in spec.cells()})
    record.seeds["data_seed"] = spec.settings.data_seed
    record.register_output(REGISTRY_FILE)
    for cell in spec.cells():  # the trained model folders the registry points to, file by file
        record.add_artefacts(f"models/{cell.name}")
    record.extra["registry"] = str(grid.registry)
    record.extra["words_origin"] = origin
    return Results(
        params=params,
        spec=spec,
        data=grid.data,
        cells=metrics.add_cell_intervals(grid.cells),
        history=grid.history,
        trajectories=grid.trajectories,
        registry=grid.registry,
        timings=grid.timings,
        words_origin=origin,
        output_dir=record.output_dir,
        eval_pairs=grid.eval_pairs,
        subsets=grid.subsets,
        null=grid.null,
        bases=base_table([get_spec(m, extra=params.extra_registry) for m in spec.models]),
    )


def base_table(specs: list[ModelSpec]) -> pd.DataFrame:
    """One row per base model: what differs between them besides pretraining (type, size, quantization of the
    weight file, tokenizer vocabulary, hidden size the head reads, layers, chat template)."""
    from transformers import AutoConfig

    rows = []
    for spec in specs:
        folder = ensure_local(spec)
        with quiet_transformers(), folder_errors(spec, folder):
            cfg = AutoConfig.from_pretrained(str(folder)).get_text_config()
            vocab = len(load_tokenizer(spec))
        rows.append(
            {
                "base_model": spec.name,
                "family": spec.family,
                "type": spec.type,
                "size": spec.size,
                "quantization": spec.source.quantization or "none",
                "weights": spec.source.gguf_file or spec.hub_id or spec.source.path,
                "hub_id": spec.hub_id or "",
                "tokenizer_vocab": vocab,
                "hidden_size": int(cfg.hidden_size),
                "layers": int(cfg.num_hidden_layers),
                "chat_template": spec.chat_template,
            }
        )
    return pd.DataFrame(rows)


def _analyse(res: Results, record: RunRecord) -> None:
    """Category trajectories, their summary across seeds, gaps, base comparison and word movers."""
    with record.timed("analysis"):
        res.accuracy = metrics.accuracy_summary(res.cells, res.eval_pairs)
        res.accuracy_comparison = metrics.accuracy_differences(res.cells, res.eval_pairs)
        res.depth_accuracy = depth_analysis.depth_accuracy(res.cells, res.eval_pairs)
        res.categories = analysis.category_trajectories(res.trajectories)
        res.summary = analysis.seed_summary(res.categories)
        try:
            res.gaps = analysis.category_gaps(res.categories)
        except ValueError:  # the corpus has no Agency / Communion pair
            res.gaps = None
        if res.gaps is not None:
            res.final = analysis.final_gaps(res.gaps, res.null if not res.null.empty else None)
        if res.gaps is not None and len(res.spec.models) > 1:
            res.comparison = analysis.compare_bases(res.gaps)
            res.depth_gaps = depth_analysis.depth_gaps(res.gaps)
        probes = res.trajectories[res.trajectories["depth"] == 0]
        res.movers = analysis.word_movers(probes)


def _compare_with_paper(res: Results, record: RunRecord) -> None:
    """The paper's released training trajectories, and their gaps beside ours."""
    with record.timed("paper"):
        res.paper, res.paper_files = paper.load_paper_training_results()
        res.paper_gaps = paper.paper_gaps(res.paper)
        gaps = res.gaps[res.gaps["depth"] == 0] if res.gaps is not None else None
        res.paper_vs_ours = paper.paper_vs_ours(res.paper_gaps, gaps) if gaps is not None else None
    record.add_inputs(paper.paper_inputs())


def _check_consistency(res: Results, prompts: pd.DataFrame, record: RunRecord) -> None:
    """Load the grid's last RM *by name* from the run's registry (:func:`rmvalues.models.load_reward_model`) and
    score it with the scoring engine on the first prompt: its rewards must equal its last checkpoint's."""
    name = str(res.cells.loc[res.cells["depth"] == 0, "cell"].iloc[-1])  # the last registered RM
    pid = str(prompts["prompt_id"].iloc[0])
    words = sorted(res.trajectories["word"].unique())
    with record.timed("consistency"), quiet_transformers():
        model, tok, _ = load_reward_model(get_spec(name, extra=[res.registry]))
        live = score_model_words(model, tok, prompts.iloc[:1], words)[pid]
    traj = res.trajectories
    last = traj[(traj["cell"] == name) & (traj["prompt_id"] == pid)]
    last = last[last["step"] == last["step"].max()].drop_duplicates("word").set_index("word")["score"]
    diff = float(np.max(np.abs(last.reindex(words).to_numpy() - live)))
    res.consistency = {
        "rm": name,
        "prompt_id": pid,
        "words": len(words),
        "max_abs_difference": diff,
        "tolerance": CONSISTENCY_TOLERANCE,
    }
    record.extra["consistency"] = res.consistency
    if not diff < CONSISTENCY_TOLERANCE:
        raise ConsistencyError(
            f"{name} loaded by name from {res.registry} gives rewards up to {diff:.3g} away from its last "
            f"checkpoint's under {pid} (tolerance {CONSISTENCY_TOLERANCE}): the saved model folder does not "
            "hold the trained head"
        )


#: The chapter's tables, as the CSV downloads the book offers beside them (``tables/<name>.csv``).
READER_TABLES = (
    "settings",
    "data",
    "cells",
    "bases",
    "accuracy",
    "final_gaps",
    "base_comparison",
    "accuracy_comparison",
    "depth_gaps",
    "depth_accuracy",
    "mover_balance",
    "word_movers",
    "paper_files",
    "paper_vs_ours",
    "consistency",
    "timings",
)


def _write(res: Results, record: RunRecord) -> None:
    tables: dict[str, pd.DataFrame | None] = {
        "cells": res.cells,
        "data": res.data,
        "bases": res.bases,
        "accuracy": res.accuracy,
        "eval_pairs": res.eval_pairs,
        "train_subsets": res.subsets,
        "history": res.history,
        "trajectories": res.trajectories,
        "category_trajectories": res.categories,
        "seed_summary": res.summary,
        "gaps": res.gaps,
        "null_gaps": res.null,
        "final_gaps": res.final,
        "base_comparison": res.comparison,
        "accuracy_comparison": res.accuracy_comparison,
        "depth_gaps": res.depth_gaps,
        "depth_accuracy": res.depth_accuracy,
        "word_movers": res.movers,
        "paper_files": res.paper_files,
        "paper_training_gaps": res.paper_gaps,
        "paper_vs_ours": res.paper_vs_ours,
    }
    for name, df in tables.items():
        if df is not None:
            record.write_parquet(df, f"{name}.parquet")
    reader = res.reader_tables()
    for name in READER_TABLES:
        record.write_csv(reader[name], f"tables/{name}.csv")
    res.findings = chapter_findings(res)
    write_findings(record, res.findings)
    record.finish()


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: train the grid (resuming), analyse the trajectories across seeds, compare with the paper's
    released results, check that a trained RM loads by name and scores identically, write the outputs."""
    start = time.perf_counter()
    record = record or RunRecord.for_params(params)
    labels, prompts, origin = _read_words(params, record)
    res = _train(params, record, labels, prompts, origin)
    _analyse(res, record)
    _compare_with_paper(res, record)
    _check_consistency(res, prompts, record)
    res.seconds = time.perf_counter() - start
    _write(res, record)
    return res
