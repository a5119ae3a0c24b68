"""Chapter 2, RM scoring: score registered reward models on corpus words x prompts, exactly, fast, resumably.

The engine (token-exact inputs, prefix-KV reuse, bucketing, readouts) is :mod:`rmvalues.engine`; this
package turns it into a stage:

* **Registry as data.** Every RM is an entry of the model registry (``config/models.yaml``, an extra registry
  file, or the ``registry.yaml`` of the training run named by ``training_run``; ``kind: reward-model``): hub
  id and pinned revision or a local folder, base family, size, dtype, attention implementation,
  ``trust_remote_code``, ``score_readout``, pad-token rule, chat-template source. Adding an RM is one entry;
  :func:`rmvalues.models.load_reward_model` loads any of them (``device_map`` for models larger than one
  device). The dtype is the registry's unless overridden, and is recorded in the manifest; nothing is ever
  quantized.
* **The words** are the scored rows of the corpora run named by ``corpora_run`` (its ``corpora.parquet``,
  verified against its manifest), at most ``max_words`` per corpus (balanced over the categories).
* **The grid** is (model, prompt, chunk of candidates) (:mod:`.grid`); a chunk is every selected word
  (``candidates="words"``) or a slice of the vocabulary (``candidates="vocab"``, every single token id). Each
  unit is written to ``parts/`` as soon as it is scored, so a rerun resumes; a changed model entry, dtype,
  word list or system prompt discards that model's parts.
* **Trained RMs are verified first.** An RM whose folder a run made (a training run's trained RM) must still
  have the files that run's manifest records, before any work (else
  :class:`~rmvalues.core.handoff.ArtefactError` naming the file and the training run to execute again); their
  checksums become inputs of this run and part of each model's parts fingerprint, and the manifest's
  ``models`` record the files' checksums of every local model loaded (the hub revision for hub models).
* **Failures** are per model (:mod:`.score`): a model that fails to load or score is reported and the others
  continue; the command line exits with status 1 at the end, the chapter raises after showing the tables,
  with each failed model's exception.
* **Sharding.** Under ``accelerate launch --multi_gpu --num_processes N -m rmvalues.stages.scoring ...`` (or
  ``torchrun --nproc_per_node N -m rmvalues.stages.scoring ...``) each process scores ``units[rank::N]`` on its
  own device and process 0 merges after a barrier; the merge is sorted, so the tables do not depend on the
  number of processes (see :mod:`.cli`).
* **Output**: ``scores.parquet`` in the long scores format of :mod:`rmvalues.data.scores` (``source =
  "live"``; one row per corpus label of a word), ``tokens.parquet`` (the token ids of every candidate per model
  and prompt, and how they were obtained), ``timings.parquet`` (per model: load and scoring time, candidates
  per second, method, batch size, dtype, device), and for word scoring ``medians.parquet`` (category median
  ranks) and, when an RM has published scores too, ``live_vs_published.parquet``; the chapter's reader tables
  as CSV downloads (``tables/<name>.csv``, :data:`READER_TABLES`; ``framing_contrasts`` is each RM's framing
  contrast ``D`` and the pair's difference, clustered by the prompts' adjectives, with the paper's
  prompt-level interval beside it); the chapter's answers ``findings.json`` (for
  the findings page); plus ``manifest.json``.

Command line (one command scores a new RM; see the README)::

    python -m rmvalues.stages.scoring --models my-rm --training-run '' --corpora big2_nouns \\
        --output-dir results/scoring/my-rm
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ...core.findings import Finding, write_findings
from ...core.handoff import verify
from ...core.manifest import RunRecord, folder_digest
from ...data.corpora import read_corpora_table
from ...data.prompts import prompt_table, prompts_checksum
from ...data.scores import empty_scores, labels_of, load_published_scores, published_corpora, published_inputs
from ...models.loading import cpu_threads, quiet_transformers
from ...models.registry import ModelSpec
from . import tables, text
from .findings import contrast_table
from .findings import findings as chapter_findings
from .grid import PARTS, Unit, merge_parts, model_fingerprint, reset_stale_parts, select_words
from .grid import shard as shard_units
from .params import Params
from .score import FAILURE_COLUMNS, GridPlan, Shard, Worker, gather_rank_files, plan_grid, write_rank_files

__all__ = ["READER_TABLES", "Results", "Shard", "Words", "run"]


@dataclass
class Words:
    """The words of a run: the selected labelled rows, every labelled row of the corpora (the published
    scores are matched against these), and the unique selected words, sorted. Empty in vocab mode."""

    labels: pd.DataFrame | None = None
    all_labels: pd.DataFrame | None = None
    words: list[str] = field(default_factory=list)


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`). On processes other than 0 only the scoring counts, this
    process's timings and failures are filled."""

    params: Params
    output_dir: Path
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    inputs: tables.InputOverview = field(default_factory=tables.InputOverview)
    scores: pd.DataFrame = field(default_factory=empty_scores)  # scores.parquet
    tokens: pd.DataFrame = field(default_factory=pd.DataFrame)  # tokens.parquet
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)  # timings.parquet
    failures: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, int] = field(default_factory=dict)  # total, skipped, scored
    medians: pd.DataFrame = field(default_factory=pd.DataFrame)  # medians.parquet
    median_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    published: pd.DataFrame = field(default_factory=pd.DataFrame)
    published_medians: pd.DataFrame = field(default_factory=pd.DataFrame)
    published_median_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    top_bottom: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)  # live_vs_published.parquet
    framing_contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # D per RM and pair, by adjective
    findings: list[Finding] = field(default_factory=list)  # findings.json: the chapter's answers

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def scored_units(self) -> int:
        return self.units.get("scored", 0)

    @property
    def skipped_units(self) -> int:
        return self.units.get("skipped", 0)

    @property
    def training_registry(self) -> str | None:
        """The training run's ``registry.yaml`` this run read its trained RMs from (None: no training run)."""
        return self.params.registry_files()[0] if self.params.training_input() is not None else None

    def failure_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.failures, columns=FAILURE_COLUMNS)

    def csv(self, name: str) -> Path:
        """The CSV download of one of the chapter's tables (:data:`READER_TABLES`)."""
        return self.output_dir / "tables" / f"{name}.csv"

    def reader_tables(self) -> dict[str, pd.DataFrame]:
        """The chapter's tables by download name (:data:`READER_TABLES`), flat (no index)."""

        def flat(df: pd.DataFrame) -> pd.DataFrame:
            return df.reset_index() if not df.empty else df

        return {
            "models": self.models,
            "input_examples": self.inputs.examples,
            "input_checks": self.inputs.checks,
            "timings": self.timings,
            "failures": self.failure_table(),
            "median_table": flat(self.median_table),
            "published_median_table": flat(self.published_median_table),
            "top_bottom": self.top_bottom,
            "comparison": self.comparison,
            "framing_contrasts": self.framing_contrasts,
        }

    def raise_for_failures(self) -> None:
        """Raise ``RuntimeError`` naming the failed models (the chapter ends with it after its tables)."""
        if self.failures:
            raise RuntimeError(text.failure_message(self.failures))


@contextlib.contextmanager
def _runtime(threads: int) -> Iterator[None]:
    """torch's CPU threads (``threads``; 0 = torch's default) and quiet transformers for the run."""
    with cpu_threads(threads), quiet_transformers():
        yield


def _read_words(params: Params, record: RunRecord) -> Words:
    """The words to score, from the corpora run's verified ``corpora.parquet`` (never the corpus files)."""
    if params.candidates != "words":
        return Words()
    with record.timed("read_words"):
        table, checksums = read_corpora_table(params.corpora_input(), params.results_root, params.corpora)
        all_labels = labels_of(table, params.corpora)
        labels = select_words(all_labels, params.max_words)
    record.add_inputs(checksums)
    return Words(labels, all_labels, sorted(labels["word"].unique()))


def _made_models(made: dict[str, dict[str, str]], record: RunRecord) -> dict[str, str]:
    """The verified files of the trained RMs (:meth:`Params.made_model_files`) as inputs of this run; returns
    the digest of each such model's files (part of its parts fingerprint)."""
    digests = {}
    for name, files in made.items():
        record.add_inputs(files)
        digests[name] = folder_digest(files)
    return digests


def _plan(params: Params, words: Words, record: RunRecord, shard_: Shard, made: dict[str, str]) -> GridPlan:
    """Resolve the RMs, lay out the grid and (process 0) discard stale parts, then wait for every process."""
    with record.timed("plan"):
        training = params.training_input()
        if shard_.is_main and training is not None:
            record.add_inputs(verify(training, params.results_root))
        (record.output_dir / PARTS).mkdir(parents=True, exist_ok=True)
        plan = plan_grid(params, params.selected_prompts(), shard_.rank)
        if shard_.is_main:
            fingerprints = {
                m: model_fingerprint(s, params, words.words, made.get(m)) for m, s in plan.specs.items()
            }
            reset_stale_parts(record.output_dir / PARTS, fingerprints)
    shard_.wait()
    return plan


def _score(
    params: Params,
    plan: GridPlan,
    words: Words,
    record: RunRecord,
    shard_: Shard,
    *,
    progress: bool,
    after_unit: Callable[[Unit], None] | None,
) -> Results:
    """Score this process's unfinished units and hand its failures and timings to process 0."""
    out = record.output_dir
    prompts = prompt_table(params.selected_prompts())
    worker = Worker(
        params, words.words, dict(zip(prompts["prompt_id"], prompts["text"], strict=True)), out / PARTS,
        shard=shard_, progress=progress, after_unit=after_unit,
    )  # fmt: skip
    mine = shard_units(plan.units, shard_.rank, shard_.world_size)
    todo = [u for u in mine if not u.path(out / PARTS).is_file()]
    with record.timed("score"):
        runs = worker.run(plan, todo)
    for r in runs:
        if r.info is not None and shard_.is_main:
            record.add_model(**r.info)
    failures = plan.failures + [r.failure for r in runs if r.failure is not None]
    timings = pd.DataFrame([r.timing for r in runs if r.timing is not None])
    write_rank_files(out, shard_.rank, failures, timings)
    units = {
        "total": len(plan.units),
        "skipped": len(mine) - len(todo),
        "scored": sum(r.scored_units for r in runs),
    }
    return Results(params, out, specs=plan.specs, timings=timings, failures=failures, units=units)


def _merge(res: Results, plan: GridPlan, words: Words, record: RunRecord, world_size: int) -> None:
    """Process 0: every process's failures and timings, and the long tables merged from the parts."""
    with record.timed("merge"):
        res.failures, res.timings = gather_rank_files(record.output_dir, world_size)
        failed = {f["model"] for f in res.failures}
        res.scores, res.tokens, missing = merge_parts(
            record.output_dir, plan.units, plan.specs, words.labels, exclude=failed
        )
    for m in sorted({u.model for u in missing} - failed):
        res.failures.append(
            {
                "model": m,
                "step": "merge",
                "prompt_id": None,
                "error": "parts missing after scoring",
                "rank": 0,
            }
        )
    record.add_inputs(prompts_checksum())
    record.write_parquet(res.scores, "scores.parquet")
    record.write_parquet(res.tokens, "tokens.parquet")
    record.write_parquet(res.timings, "timings.parquet")


def _check_inputs(res: Results, params: Params, words: Words, record: RunRecord) -> None:
    """The registry facts of the RMs and the token-exactness checks of their inputs (word scoring; the
    models that failed are left out of the checks)."""
    res.models = tables.model_table(list(res.specs.values()))
    if params.candidates != "words":
        return
    failed = {f["model"] for f in res.failures}
    prompts = prompt_table(params.prompts or None)  # in the order given: examples from the first
    with record.timed("token_checks"):
        res.inputs = tables.input_overview(
            [s for name, s in res.specs.items() if name not in failed],
            dict(zip(prompts["prompt_id"], prompts["text"], strict=True)),
            words.words,
            params.system_prompt,
        )


def _analyse(res: Results, params: Params, words: Words, record: RunRecord) -> None:
    """Category median ranks of the live scores, and of the published scores of the paper's RMs under the
    same prompts; the top and bottom words; live vs published where an RM has both."""
    if params.candidates != "words" or res.scores.empty:
        return
    with record.timed("analysis"):
        res.medians = tables.category_medians(res.scores)
        res.median_table = tables.median_table(res.medians)
        res.framing_contrasts = contrast_table(res.medians)
        res.top_bottom = tables.top_bottom_words(res.scores, n=8)
        published = [c for c in params.corpora if c in published_corpora()]
        if published:
            res.published = load_published_scores(words.all_labels, published, params.prompts or None)
            record.add_inputs(published_inputs(published))
        if not res.published.empty:
            res.published_medians = tables.category_medians(res.published)
            res.published_median_table = tables.median_table(
                res.published_medians, ("corpus", "family", "framing")
            )
        res.comparison = tables.live_vs_published(res.scores, res.published)
    record.write_parquet(res.medians, "medians.parquet")
    if not res.comparison.empty:
        record.write_parquet(res.comparison, "live_vs_published.parquet")


#: The chapter's tables, as the CSV downloads the book offers beside them (``tables/<name>.csv``).
READER_TABLES = (
    "models",
    "input_examples",
    "input_checks",
    "timings",
    "failures",
    "median_table",
    "published_median_table",
    "top_bottom",
    "comparison",
    "framing_contrasts",
)


def _write_tables(res: Results, record: RunRecord) -> None:
    """Every reader table as a CSV download (written even when empty, so the book's links resolve)."""
    tables_ = res.reader_tables()
    for name in READER_TABLES:
        record.write_csv(tables_[name], f"tables/{name}.csv")


def _finish(res: Results, record: RunRecord) -> None:
    res.findings = chapter_findings(res)
    write_findings(record, res.findings)
    record.extra["failures"] = res.failures
    record.extra["units"] = res.units
    record.extra["timings"] = res.timings.to_dict("records")
    record.finish()


def run(
    params: Params,
    record: RunRecord | None = None,
    *,
    shard: Shard | None = None,
    progress: bool = True,
    after_unit: Callable[[Unit], None] | None = None,
) -> Results:
    """The chapter: read the words, plan the grid, score this process's units (resuming finished ones),
    then on process 0 merge the parts, check the inputs, analyse, write the outputs and the manifest.

    ``shard`` places this process among several (``accelerate``/``torchrun``; see :mod:`.cli`); ``progress``
    shows a progress bar per model; ``after_unit`` is called after each written unit (tests use it). Failed
    models are in ``results.failures`` (the run does not raise for them).
    """
    shard_ = shard or Shard()
    made_files = params.made_model_files()  # trained RMs verified before any work (and any output folder)
    record = record or RunRecord.for_params(params)
    with _runtime(params.threads):
        made = _made_models(made_files, record)
        words = _read_words(params, record)
        plan = _plan(params, words, record, shard_, made)
        res = _score(params, plan, words, record, shard_, progress=progress, after_unit=after_unit)
        shard_.wait()
        if not shard_.is_main:
            return res
        _merge(res, plan, words, record, shard_.world_size)
        _check_inputs(res, params, words, record)
        _analyse(res, params, words, record)
    _write_tables(res, record)
    _finish(res, record)
    return res
