"""One parameter schema per stage: defaults, types, allowed values, help text and validation in one class.

Each stage declares a subclass of :class:`StageParams` (a pydantic model; ``lib/rmvalues/stages/<x>/params.py``).
Everything else is derived from it or checked against it:

* the notebook's ``parameters`` cell declares exactly the schema's fields with the schema's defaults (a test
  compares them; :meth:`StageParams.notebook_cell` prints the cell);
* the runner validates a run's merged parameters with :meth:`StageParams.build` **once, before any work**;
* command-line tools take ``--<name>`` options built by :meth:`StageParams.add_arguments`, and
  ``python -m rmvalues list`` prints :meth:`StageParams.describe`.

Validation has two levels. Field-level (types, allowed values, bounds) is pydantic's, in strict mode (no
silent coercion; an integer is accepted where a float is expected). Stage-level checks that need the model
registry, the corpus registry or files on disk are the subclass's :meth:`StageParams.check`, which returns
a list of problems; every problem says what is wrong, the valid choices and the fix. Both end in one
:class:`~rmvalues.core.errors.ParameterError` that lists every problem at once.

A stage also declares what it reads from upstream runs (:meth:`StageParams.reads`, see
:mod:`rmvalues.core.handoff`), as a function of its parameters.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import paths
from .errors import ParameterError
from .handoff import StageInput

#: Parameters the runner sets for every run (part of every schema).
INJECTED = ("output_dir", "results_root", "run_name")
#: Run names: letters, digits, ``_``, ``-``, ``.`` (they become folder and page names).
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

__all__ = ["INJECTED", "RUN_NAME", "StageParams", "param", "run_name_problem"]


def param(default: Any = ..., *, help: str, **constraints: Any) -> Any:
    """A schema field: its default, its help text (shown in listings and the notebook) and constraints
    (``ge``, ``le``, ``min_length``, ...; see :func:`pydantic.Field`)."""
    if isinstance(default, list | dict):
        value = default
        return Field(default_factory=lambda: type(value)(value), description=help, **constraints)
    return Field(default, description=help, **constraints)


def run_name_problem(key: str, value: str) -> str | None:
    """A problem message when ``value`` is not a valid run name, else None."""
    if isinstance(value, str) and RUN_NAME.match(value):
        return None
    return f"{key}={value!r}: give a run name of letters, digits, '_', '-', '.' (e.g. 'default')"


class StageParams(BaseModel):
    """Base of every stage's parameter schema (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, frozen=False)

    #: The stage this schema belongs to (its name in ``config/run.yaml`` and under ``results/``).
    STAGE: ClassVar[str] = ""

    output_dir: str = param(
        "", help="folder of this run's outputs ('' = <results_root>/<stage>/<run_name>; set by the runner)"
    )
    results_root: str = param(
        "",
        help="folder of all runs' outputs ('' = $RMVALUES_RESULTS or <project>/results; set by the runner)",
    )
    run_name: str = param("default", help="name of this run (its results folder and book page)")

    # -- building ---------------------------------------------------------------------------------------------
    @classmethod
    def stage_name(cls) -> str:
        return cls.STAGE

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Self:
        """Field-level validation only (names, types, allowed values); raises :class:`ParameterError`."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise ParameterError(cls.STAGE, cls._describe_errors(exc.errors())) from None

    @classmethod
    def _describe_errors(cls, errors: list[Any]) -> list[str]:
        """One message per problem; the branches of a union type collapse into one message per field."""
        out: list[str] = []
        unions: set[str] = set()
        for error in errors:
            loc = error.get("loc", ())
            if len(loc) >= 2 and isinstance(loc[1], str) and loc[0] in cls.model_fields:
                name = str(loc[0])
                if name not in unions:
                    unions.add(name)
                    field = cls.model_fields[name]
                    out.append(
                        f"{name}={values_input(errors, name)!r}: not one of the accepted forms "
                        f"({_type_name(field.annotation)}): {field.description}"
                    )
                continue
            out.append(cls._describe_error(error))
        return out

    @classmethod
    def build(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> Self:
        """The validated parameters: field-level validation, then the stage's own :meth:`check`."""
        params = cls.parse({**dict(values or {}), **overrides})
        problems = params.check()
        if problems:
            raise ParameterError(cls.STAGE, problems)
        return params

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Self:
        """:meth:`build` from the variables of a notebook's ``parameters`` cell (e.g. ``globals()``)."""
        return cls.build({k: namespace[k] for k in cls.model_fields if k in namespace})

    @classmethod
    def _describe_error(cls, error: Mapping[str, Any]) -> str:
        loc = [str(x) for x in error.get("loc", ())]
        name = loc[0] if loc else "?"
        where = name + "".join(f"[{x}]" for x in loc[1:])
        if error.get("type") == "extra_forbidden":
            return (
                f"unknown parameter {name!r}; valid parameters of the {cls.STAGE} stage: "
                f"{', '.join(cls.model_fields)}"
            )
        field = cls.model_fields.get(name)
        hint = f" ({field.description})" if field is not None and field.description else ""
        return f"{where}={error.get('input')!r}: {error.get('msg')}{hint}"

    # -- stage-level checks and hand-offs (overridden by the stages) ----------------------------------------
    def check(self) -> list[str]:
        """Stage-level problems (registries, files, combinations); empty when the parameters are usable."""
        return [p for p in (run_name_problem("run_name", self.run_name),) if p]

    def reads(self) -> list[StageInput]:
        """Outputs of upstream runs this run reads (their absence is one clear error before any work)."""
        return []

    def promises(self) -> dict[str, Any]:
        """What this run's outputs will hold, known from its parameters before it runs (e.g. the base-model
        families of the RMs a scoring run scores); ``{}`` when that cannot be known yet. A downstream run planned
        with this one checks its own parameters against it (:meth:`check_planned`), before any work."""
        return {}

    def check_planned(self, upstream: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Problems of this run's parameters against what its planned upstream runs promise (``upstream``:
        input label, e.g. ``"scoring/live"`` -> :meth:`promises`), found before those runs execute."""
        return []

    def config_used(self) -> dict[str, Any]:
        """The configuration this run depends on, as data (part of its up-to-date key: an edit elsewhere does
        not make it stale). The default is conservative, every configuration file but ``run.yaml``; stages
        narrow it to the registry entries, corpora and settings they use."""
        from .files import sha256_file

        folder = paths.config_dir()
        return {f.name: sha256_file(f) for f in sorted(folder.glob("*.yaml")) if f.name != "run.yaml"}

    # -- views ------------------------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    def results_dir(self) -> Path:
        """The results root of this run (``results_root``, or the project's when empty)."""
        return paths.resolve(self.results_root) if self.results_root else paths.results_root()

    def output_path(self) -> Path:
        """``output_dir``, or ``<results_root>/<stage>/<run_name>`` when it is empty (absolute)."""
        if self.output_dir:
            return paths.resolve(self.output_dir)
        return self.results_dir() / self.STAGE / self.run_name

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {
            name: (f.default_factory() if f.default_factory is not None else f.default)
            for name, f in cls.model_fields.items()
        }

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per parameter: name, type, default, help (for listings)."""
        return [
            {
                "name": name,
                "type": _type_name(f.annotation),
                "default": cls.defaults()[name],
                "help": f.description or "",
            }
            for name, f in cls.model_fields.items()
        ]

    @classmethod
    def notebook_cell(cls) -> str:
        """The source of the notebook's ``parameters`` cell: the stage's fields, then the injected ones, each
        under a comment with its help (the test of the notebooks compares the cell with the schema)."""
        names = [n for n in cls.model_fields if n not in INJECTED] + list(INJECTED)
        defaults = cls.defaults()
        lines = []
        for name in names:
            lines.append(f"# {cls.model_fields[name].description}")
            lines.append(f"{name} = {_python(defaults[name])}")
        return "\n".join(lines)

    # -- command line -----------------------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
        """One ``--<name>`` option per field (values parsed as Python/YAML literals; lists as several words)."""
        for name, f in cls.model_fields.items():
            if name in skip:
                continue
            default = cls.defaults()[name]
            option = "--" + name.replace("_", "-")
            if isinstance(default, list):
                parser.add_argument(
                    option, nargs="*", default=None, help=f"{f.description} (default: {default})"
                )
            else:
                parser.add_argument(option, default=None, help=f"{f.description} (default: {default!r})")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The values given on the command line (absent options are left to the defaults)."""
        out: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in skip:
                continue
            value = getattr(args, name, None)
            if value is None:
                continue
            out[name] = [_literal(v) for v in value] if isinstance(value, list) else _literal(value)
        return out


def values_input(errors: list[Any], name: str) -> Any:
    """The input of field ``name`` as given (from the first error about it)."""
    for error in errors:
        if error.get("loc", ())[:1] == (name,):
            return error.get("input")
    return None


def _python(value: Any) -> str:
    """Python source of a default value, with double-quoted strings (the notebooks' formatter style)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_python(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_python(k)}: {_python(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _literal(text: Any) -> Any:
    """A command-line word as a value: a Python/YAML literal when it parses as one, else the string."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("none", "null", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, int | float | list | dict | tuple) else text


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    text = re.sub(r"typing\.|<class '([^']+)'>", lambda m: m.group(1) or "", text)
    return text.replace("NoneType", "None")
