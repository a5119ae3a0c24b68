"""Stage hand-offs: the outputs of upstream runs that a run reads, declared, located and verified.

A stage's parameters declare what the run reads (:meth:`rmvalues.core.params.StageParams.reads`), e.g. the
implicit-rewards stage reads ``corpora.parquet`` of the corpora run named by its ``corpora_run`` parameter.
The runner orders and fingerprints runs from these declarations; the stage opens each file through
:func:`input_path`, which checks that the upstream run finished (its ``manifest.json`` lists the file) and
that the file still has the checksum the manifest recorded. Anything else is one clear error,
:class:`~rmvalues.core.errors.MissingInputError`, that names the run to execute first. There is no silent
fallback to other data.

Folders a run keeps beside its tables (trained model folders, the manifest's ``artefacts``) are verified the
same way before a later run loads one: :func:`verify_folder` finds the run that made a folder (the nearest
enclosing output folder whose manifest lists it) and checks every file against that manifest; a missing,
changed or unrecorded file is an :class:`ArtefactError` naming the file and the command that makes it again.
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
from .manifest import ARTEFACTS, folder_changes, sha256_cached

MANIFEST = "manifest.json"


class ArtefactError(MissingInputError):
    """A folder made by a run (a trained model) no longer matches the manifest of the run that made it."""


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


@dataclass(frozen=True)
class Producer:
    """The run that made a folder: its stage, run, output folder, the folder's place in it and the checksums
    its manifest recorded for the folder's files."""

    stage: str
    run: str
    output_dir: Path
    folder: str  # relative to output_dir, e.g. "models/<rm>"
    recorded: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.run}"

    @property
    def command(self) -> str:
        return run_command(self.stage, self.run)

    def inputs(self) -> dict[str, str]:
        """``{"<stage>/<run>/<folder>/<file>": sha256}``: the folder's files as a reading run's inputs."""
        return {
            f"{self.label}/{self.folder}/{name}": digest for name, digest in sorted(self.recorded.items())
        }


def producer(folder: str | os.PathLike[str]) -> Producer | None:
    """The run whose manifest lists ``folder`` among its artefacts (the nearest enclosing folder with such a
    manifest), or None (a folder no run of this project made, or made before runs recorded their artefacts)."""
    folder = Path(folder).resolve()
    for parent in folder.parents:
        path = parent / MANIFEST
        if not path.is_file():
            continue
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rel = folder.relative_to(parent).as_posix()
        recorded = (manifest.get(ARTEFACTS) or {}).get(rel)
        if isinstance(recorded, dict):
            stage = str(manifest.get("stage") or parent.parent.name)
            return Producer(stage, str(manifest.get("run") or parent.name), parent, rel, dict(recorded))
    return None


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the project root when inside it."""
    try:
        return str(path.resolve().relative_to(paths.project_root().resolve()))
    except ValueError:
        return str(path)


def verify_folder(folder: str | os.PathLike[str], what: str) -> dict[str, str]:
    """Check a folder made by a run (``what`` names it: "model 'x'") against that run's manifest before it is
    loaded; returns its files' checksums as inputs of the reading run (``{"<stage>/<run>/<folder>/<file>":
    sha256}``; ``{}`` for a folder no run made).

    Raises :class:`ArtefactError` when a file is missing, changed or not recorded, naming the file and the
    command that makes the folder again.
    """
    made = producer(folder)
    if made is None:
        return {}
    changes = folder_changes(made.output_dir / made.folder, made.recorded)
    if changes:
        file, how = changes[0]
        where = shown(made.output_dir / made.folder / file)
        if how == "missing":
            detail = f"{where} is missing (the manifest of {made.label}, the run that made it, records it)"
        elif how == "changed":
            now = sha256_cached(made.output_dir / made.folder / file)
            detail = (
                f"{where} was changed after the run that made it, {made.label} (sha256 {now[:12]}..., its "
                f"manifest recorded {made.recorded[file][:12]}...)"
            )
        else:
            detail = (
                f"{where} was added after the run that made it, {made.label} (its manifest does not list it)"
            )
        more = [f"{name} ({h})" for name, h in changes[1:4]]
        extra = f" (and {len(changes) - 1} more: {', '.join(more)})" if more else ""
        raise ArtefactError(
            f"{what} cannot be used: {detail}{extra}. Re-run {made.stage}: `{made.command}` (it makes the "
            "folder again from the run's parameters), then run this again"
        )
    return made.inputs()
