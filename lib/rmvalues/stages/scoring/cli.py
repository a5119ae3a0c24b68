"""Command line of the RM-scoring stage (one command scores a new RM)::

    python -m rmvalues.stages.scoring --models my-rm --training-run '' --corpora big2_nouns mfd2 \\
        --run-name my-rm

The options are the parameters of the schema (:class:`~rmvalues.stages.scoring.params.Params`: ``--models``,
``--extra-registry``, ``--corpora``, ``--prompts``, ``--max-words``, ``--batch-size``, ``--dtype``, ...; values
are Python/YAML literals, lists are several words), plus ``--no-progress``. The run's folder is
``<results_root>/scoring/<run_name>`` (``--run-name`` defaults to ``cli`` here, so that a command-line run does
not replace the chapter's run ``default``) or ``--output-dir``. The parameters and the upstream outputs the run
reads (the corpora run's ``corpora.parquet``, the training run's ``registry.yaml``) are checked before any work
(exit status 2). A model that fails is reported after the others are scored (exit status 1).

Several processes: ``accelerate launch --multi_gpu --num_processes N -m rmvalues.stages.scoring ...`` or
``torchrun --nproc_per_node N -m rmvalues.stages.scoring ...`` (several nodes: add ``--num_machines``,
``--machine_rank``, ``--main_process_ip``). Each process scores ``units[rank::N]`` on its own device and
process 0 merges after a barrier; the merge is sorted, so the tables do not depend on the number of processes.
On a machine without CUDA the processes run on the CPU with a gloo process group (accelerate 1.15's ``--cpu``
flag starts a single process unless MPI is configured, so use ``--multi_gpu`` there too).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ...core.errors import RmvaluesError
from ...core.handoff import verify
from .params import Params
from .run import Shard, run

#: Run name of a command-line run unless ``--run-name`` is given.
CLI_RUN = "cli"

__all__ = ["CLI_RUN", "build_parser", "distributed", "main"]


def distributed() -> Shard:
    """This process's :class:`Shard` under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1), else
    one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only: gloo process group
    device = str(state.device) if state.device.type == "cuda" else None
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone, device)


def build_parser() -> argparse.ArgumentParser:
    """The options: one per parameter of the schema, and ``--no-progress``."""
    ap = argparse.ArgumentParser(
        prog="python -m rmvalues.stages.scoring",
        description="Score registered reward models on corpus words x the paper's prompts (live scores).",
    )
    Params.add_arguments(ap, skip=("run_name",))
    ap.add_argument(
        "--run-name",
        default=CLI_RUN,
        help=f"name of this run: its folder under <results_root>/scoring (default: {CLI_RUN!r})",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def parse_params(argv: Sequence[str] | None = None) -> tuple[Params, argparse.Namespace]:
    """The validated parameters of a command line (raises :class:`~rmvalues.core.errors.ParameterError`)."""
    args = build_parser().parse_args(argv)
    values = {**Params.from_arguments(args, skip=("run_name",)), "run_name": args.run_name}
    return Params.build(values), args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exits non-zero when any model failed (after scoring the others)."""
    try:
        params, args = parse_params(argv)
        for inp in params.reads():  # before any work: the upstream outputs exist and match their manifests
            verify(inp, params.results_root)
    except RmvaluesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shard = distributed()
    res = run(params, shard=shard, progress=not args.no_progress)
    if shard.is_main:
        print(
            f"{len(res.scores)} score rows written to {res.output_dir / 'scores.parquet'} "
            f"({res.scored_units} units scored, {res.skipped_units} already done)"
        )
        for f in res.failures:
            print(f"FAILED {f['model']} at {f['step']}: {f['error']}", file=sys.stderr)
    return 1 if res.failures else 0
