"""Stage hand-offs: the outputs of upstream runs that a run reads, declared, located and verified.

A stage's parameters declare what the run reads (:meth:`rmvalues.core.params.StageParams.reads`), e.g. the
implicit-rewards stage reads ``corpora.parquet`` of the corpora run named by its ``corpora_run`` parameter.
The runner orders and fingerprints runs from these declarations; the stage opens each file through
:func:`input_path`, which checks that the upstream run finished (its ``manifest.json`` lists the file) and
that the file still has the checksum the manifest recorded. Anything else is one clear error,
:class:`~rmvalues.core.errors.MissingInputError`, that names the run to execute first. There is no silent
fallback to other data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .errors import MissingInputError
from .files import sha256_file

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StageInput:
    """Files of one upstream run that a run reads.

    ``why`` says what for (shown in errors and listings); ``param`` names the parameter of the reading run
    that selects the upstream run (e.g. ``corpora_run``), so that the runner can point it at another run;
    ``requires`` lists what the upstream run's parameters must hold for its output to serve this run:
    ``(name, values)`` pairs, a list parameter must include every value, any other must equal it.
    """

    stage: str
    run: str
    files: tuple[str, ...]
    why: str = ""
    param: str = ""
    requires: tuple[tuple[str, Any], ...] = ()

    def satisfied_by(self, upstream: Mapping[str, Any]) -> bool:
        """Whether an upstream run with these parameters produces what this input needs."""
        for name, want in self.requires:
            have = upstream.get(name)
            if isinstance(want, tuple):
                if not isinstance(have, list | tuple) or not set(want) <= set(have):
                    return False
            elif have != want:
                return False
        return True

    def required_parameters(self) -> dict[str, Any]:
        """The upstream parameters this input needs, as a run's parameters (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.requires}

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.run}"

    def folder(self, results_root: str | os.PathLike[str] | None = None) -> Path:
        root = paths.resolve(results_root) if results_root else paths.results_root()
        return root / self.stage / self.run


def run_command(stage: str, run: str) -> str:
    """The command that (re)creates one run."""
    return f"make chapter NAME={stage}" + (f" RUN={run}" if run != "default" else "")


def _missing(inp: StageInput, file: str, detail: str) -> MissingInputError:
    return MissingInputError(
        f"{inp.label}: {file} {detail}. This run reads it ({inp.why or 'declared input'}): run stage "
        f"{inp.stage!r} (run {inp.run!r}) first: `{run_command(inp.stage, inp.run)}`"
    )


def read_upstream_manifest(inp: StageInput, results_root: str | os.PathLike[str] | None = None) -> dict:
    """The manifest of the upstream run (raises :class:`MissingInputError` when the run never finished)."""
    path = inp.folder(results_root) / MANIFEST
    if not path.is_file():
        raise _missing(inp, MANIFEST, f"does not exist ({path}): the run has not finished")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise _missing(inp, MANIFEST, f"is not valid JSON ({exc})") from None


def verify(inp: StageInput, results_root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Check every file of ``inp`` against its run's manifest; returns ``{"<stage>/<run>/<file>": sha256}``.

    Raises :class:`MissingInputError` when the run has no manifest, the manifest does not list a file, the
    file is absent, or its sha256 differs from the recorded one (a truncated or replaced file).
    """
    manifest = read_upstream_manifest(inp, results_root)
    outputs = manifest.get("outputs") or {}
    folder = inp.folder(results_root)
    out: dict[str, str] = {}
    for file in inp.files:
        path = folder / file
        if file not in outputs:
            raise _missing(inp, file, f"is not among the outputs its manifest lists ({', '.join(outputs)})")
        if not path.is_file():
            raise _missing(inp, file, f"does not exist ({path})")
        digest = sha256_file(path)
        if digest != outputs[file]:
            raise _missing(
                inp,
                file,
                f"does not match its manifest (sha256 {digest[:12]}..., recorded {str(outputs[file])[:12]}...): "
                "the file was changed or truncated after the run",
            )
        out[f"{inp.label}/{file}"] = digest
    return out


def input_path(
    inp: StageInput, file: str, results_root: str | os.PathLike[str] | None = None
) -> tuple[Path, str]:
    """``(path, sha256)`` of one verified file of ``inp`` (see :func:`verify`)."""
    if file not in inp.files:
        raise ValueError(f"{file!r} is not declared among the files of {inp.label} ({inp.files})")
    digest = verify(StageInput(inp.stage, inp.run, (file,), inp.why), results_root)
    return inp.folder(results_root) / file, next(iter(digest.values()))
