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

**Sub-models.** A field may be a pydantic model of its own (the training stage's ``settings``), given as a dict
of its fields and declared ``param({}, help=..., validate_default=True)``: its default (and the notebook's
``parameters`` cell) reads ``{}``, the dict is validated into the model with the other fields, and a problem
names the field as ``outer.inner`` with the inner field's help (:func:`describe_errors`).

A stage also declares what it reads from upstream runs (:meth:`StageParams.reads`, see
:mod:`rmvalues.core.handoff`), as a function of its parameters.

**Bounds from the machine.** A parameter with a cost declares its bound once, as field metadata checked with
the field (so before any work, and with the other problems): a count of resamples or simulations is a
``Annotated[int, CountBound(...)]`` (a documented maximum chosen for :data:`TIME_BUDGET`, and at most what fits
in :data:`MEMORY_SHARE` of this machine's memory at the stated bytes per unit), and torch's CPU threads are
:data:`Threads` (at most the CPU cores this process may use). The message names the bound and why;
``python -m rmvalues list`` shows each bound as it stands on this machine.

**Run names** become folder, page and label names: :func:`run_name_problem` accepts ASCII letters, digits,
``_``, ``-`` and ``.`` only (matched in full: no trailing newline), starting with a letter or digit, without
``..`` and at most :data:`RUN_NAME_MAX` characters long.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import types
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

from . import paths
from .errors import ParameterError
from .handoff import StageInput

#: Parameters the runner sets for every run (part of every schema).
INJECTED = ("output_dir", "results_root", "run_name")
#: Run names: ASCII letters, digits, ``_``, ``-``, ``.``, starting with a letter or digit (they become folder,
#: page and label names). Use it with ``fullmatch``: ``$`` in a ``match`` would accept a trailing newline.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: The longest run name (folder names, page names ``<stage>--<run>`` and figure labels are built from it).
RUN_NAME_MAX = 64
#: A count's documented maximum keeps its part of a chapter within this budget (at the costs its bound states).
TIME_BUDGET = "about an hour on the development machine (2 CPU cores)"
#: The share of this machine's memory one count may hold at once (the rest: the data, the models, other jobs).
MEMORY_SHARE = 0.5

__all__ = [
    "INJECTED",
    "MEMORY_SHARE",
    "RUN_NAME",
    "RUN_NAME_MAX",
    "TIME_BUDGET",
    "Bound",
    "CountBound",
    "StageParams",
    "Threads",
    "WithinCores",
    "cpu_cores",
    "describe_errors",
    "machine_memory",
    "param",
    "batch_size_field",
    "run_name_problem",
    "threads_field",
]


def param(default: Any = ..., *, help: str, **constraints: Any) -> Any:
    """A schema field: its default, its help text (shown in listings and the notebook) and constraints
    (``ge``, ``le``, ``min_length``, ...; see :func:`pydantic.Field`)."""
    if isinstance(default, list | dict):
        value = default
        return Field(default_factory=lambda: type(value)(value), description=help, **constraints)
    return Field(default, description=help, **constraints)


def run_name_problem(key: str, value: str) -> str | None:
    """A problem message when ``value`` is not a valid run name (see :data:`RUN_NAME`), else None."""
    why = _run_name_flaw(value)
    if why is None:
        return None
    return (
        f"{key}={value!r}: give a run name of 1 to {RUN_NAME_MAX} ASCII letters, digits, '_', '-', '.', "
        f"starting with a letter or digit, without '..' (e.g. 'default', 'my-corpus'); this one: {why}"
    )


def _run_name_flaw(value: Any) -> str | None:
    """What is wrong with a run name (it becomes a folder, a page and labels), or None."""
    if not isinstance(value, str):
        return f"a run name is a string, not {type(value).__name__}"
    if not value:
        return "the name is empty"
    bad = next((c for c in value if unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        return f"it holds the control or invisible character {bad!r} (U+{ord(bad):04X})"
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    if ".." in value:
        return "it holds '..'"
    if len(value) > RUN_NAME_MAX:
        return f"it is {len(value)} characters long (at most {RUN_NAME_MAX})"
    other = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_.-"))), None)
    if other is not None:
        name = unicodedata.name(other, "unnamed")
        return f"it holds {other!r} (U+{ord(other):04X} {name}), not an ASCII letter, digit, '_', '-' or '.'"
    if RUN_NAME.fullmatch(value) is None:
        return "it starts with '_', '-' or '.'"
    return None


# -- bounds from the machine ----------------------------------------------------------------------------------
def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def machine_memory() -> int:
    """Bytes of memory this machine gives the process: its physical memory, or its control group's limit when
    that is lower (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


class Bound:
    """Field metadata that bounds an integer parameter (``Annotated[int, bound]``): pydantic runs
    :meth:`problem` after the field's own checks, so a value beyond the bound fails with the other field
    problems, before any work."""

    def problem(self, name: str, value: int) -> str | None:
        """What is wrong with ``value`` (naming the bound and why), or None."""
        raise NotImplementedError

    def describe(self) -> str:
        """The bound as it stands on this machine (for listings)."""
        raise NotImplementedError

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: int, info: core_schema.ValidationInfo) -> int:
        problem = self.problem(info.field_name or "value", value)
        if problem is not None:
            raise ValueError(problem)
        return value


@dataclass(frozen=True)
class CountBound(Bound):
    """The bound of a count with a cost (resamples, simulations, a batch): at most ``maximum``, chosen for
    :data:`TIME_BUDGET` at the costs ``why`` states, and, when ``bytes_each`` is given (the memory one unit
    holds at once, at the largest input the bound assumes), at most what fits in :data:`MEMORY_SHARE` of this
    machine's memory (:func:`machine_memory`)."""

    maximum: int
    why: str
    bytes_each: int = 0
    per: str = "unit"  # what ``bytes_each`` is the memory of (e.g. "permutation of a panel of 540 points")

    def memory_limit(self) -> int | None:
        """The largest count whose units fit in the memory share (None: no memory bound)."""
        if not self.bytes_each:
            return None
        return max(1, int(machine_memory() * MEMORY_SHARE) // self.bytes_each)

    def limit(self) -> int:
        """The largest count accepted on this machine."""
        memory = self.memory_limit()
        return self.maximum if memory is None else min(self.maximum, memory)

    def problem(self, name: str, value: int) -> str | None:
        limit = self.limit()
        if value <= limit:
            return None
        if value > self.maximum:
            return f"above the bound {name} <= {self.maximum:,} ({self.why}); give {name} <= {limit:,}"
        share = f"{MEMORY_SHARE:.0%} of this machine's {_gib(machine_memory())} of memory"
        return (
            f"would hold about {_gib(value * self.bytes_each)} at once (about {self.bytes_each:,} bytes per "
            f"{self.per}), more than {share}; give {name} <= {limit:,}"
        )

    def describe(self) -> str:
        memory = self.memory_limit()
        if memory is None or memory >= self.maximum:
            return f"at most {self.maximum:,} ({self.why})"
        return (
            f"at most {self.limit():,} here: {self.bytes_each:,} bytes per {self.per} in {MEMORY_SHARE:.0%} of "
            f"{_gib(machine_memory())} of memory; at most {self.maximum:,} anywhere ({self.why})"
        )


@dataclass(frozen=True)
class WithinCores(Bound):
    """At most the CPU cores this process may use (:func:`cpu_cores`): more threads than cores only wait on
    each other."""

    def problem(self, name: str, value: int) -> str | None:
        cores = cpu_cores()
        if value <= cores:
            return None
        return (
            f"more than the {cores} CPU core(s) this process may use; threads beyond the cores only wait on each "
            f"other (threads=999 made a 12 s scoring cell take 193 s on 2 cores); give {name} between 0 "
            f"(torch's default) and {cores}"
        )

    def describe(self) -> str:
        return f"at most {cpu_cores()} (the CPU cores this process may use)"


#: The ``threads`` field of every stage that sets torch's CPU threads: 0 (torch's default) to the cores
#: available (``threads: Threads = threads_field()``).
Threads = Annotated[int, Field(ge=0), WithinCores()]


def batch_size_field(items: str) -> Any:
    """The ``batch_size`` parameter, with one default and one meaning in every stage that runs an engine:
    ``items`` per forward pass, 0 (the default) = automatic (:func:`resolve_batch_size`)."""
    return param(AUTOMATIC_BATCH, help=f"{items} per forward pass (0: automatic)", ge=0)


def threads_field() -> Any:
    """The ``threads`` parameter, with one default and one meaning in every stage that runs torch on the CPU:
    0 leaves torch's own default (one thread per core), n > 0 sets n threads for the run."""
    return param(0, help="torch CPU threads for the run (0 = torch's default: one per core)")


#: ``batch_size`` means one thing in every stage and engine: items per forward pass, with 0 = automatic (the
#: engine picks by device; see :func:`resolve_batch_size`). A stage adds its own :class:`CountBound`.
AUTOMATIC_BATCH = 0
BatchSize = Annotated[int, Field(ge=0)]


def resolve_batch_size(batch_size: int, device_type: str, *, cpu: int, cuda: int) -> int:
    """The batch size an engine uses: ``batch_size`` itself, or for :data:`AUTOMATIC_BATCH` (0) the engine's
    automatic choice for the device (``cpu`` on a CPU, ``cuda`` on a GPU). Anything else than a non-negative
    integer is refused with the one meaning spelled out."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(
            f"batch_size must be a positive integer, or {AUTOMATIC_BATCH} for automatic, not {batch_size!r}"
        )
    if batch_size != AUTOMATIC_BATCH:
        return batch_size
    return cuda if device_type == "cuda" else cpu


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
        return describe_errors(cls, errors, cls._unknown_parameter)

    @classmethod
    def _unknown_parameter(cls, name: str) -> str:
        return (
            f"unknown parameter {name!r}; valid parameters of the {cls.STAGE} stage: "
            f"{', '.join(cls.model_fields)}"
        )

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
        """One row per parameter: name, type, default, help (for listings; a bounded field's help ends with its
        bound on this machine)."""
        rows = []
        for name, f in cls.model_fields.items():
            bounds = [m.describe() for m in f.metadata if isinstance(m, Bound)]
            rows.append(
                {
                    "name": name,
                    "type": _type_name(f.annotation),
                    "default": cls.defaults()[name],
                    "help": " ".join([f.description or "", *(f"[{b}]" for b in bounds)]).strip(),
                }
            )
        return rows

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


def describe_errors(
    model: type[BaseModel], errors: Sequence[Mapping[str, Any]], unknown: Callable[[str], str]
) -> list[str]:
    """One message per problem of a pydantic validation of ``model`` (``errors``: ``ValidationError.errors()``),
    each naming the field (a field of a sub-model as ``outer.inner``), the value given, what is wrong and the
    field's help; the branches of a union type collapse into one message per field. ``unknown(name)``: the
    message for an unknown top-level key."""
    out: list[str] = []
    unions: set[str] = set()
    for error in errors:
        loc = tuple(error.get("loc", ()))
        names, fields = _field_path(model, loc)
        rest = loc[len(names) :]
        if names and rest and isinstance(rest[0], str) and error.get("type") != "extra_forbidden":
            key = ".".join(names)
            if key not in unions:
                unions.add(key)
                field = fields[-1]
                out.append(
                    f"{key}={error.get('input')!r}: not one of the accepted forms ({_form(field.annotation)}): "
                    f"{field.description}"
                )
            continue
        out.append(_describe_error(error, names, fields, unknown))
    return out


def _field_path(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    """The names and fields an error's location walks through (into sub-models), up to the first that is
    not a field."""
    names: list[str] = []
    fields: list[Any] = []
    current: Any = model
    for x in loc:
        if current is None or not isinstance(x, str) or x not in current.model_fields:
            break
        field = current.model_fields[x]
        names.append(x)
        fields.append(field)
        current = _sub_model(field.annotation)
    return names, fields


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _describe_error(
    error: Mapping[str, Any], names: list[str], fields: list[Any], unknown: Callable[[str], str]
) -> str:
    loc = [str(x) for x in error.get("loc", ())]
    message = str(error.get("msg"))
    if error.get("type") == "value_error":  # a Bound's or a validator's: pydantic's prefix says nothing more
        message = message.removeprefix("Value error, ")
    if not loc:  # the model's own (cross-field) validator
        return message
    if error.get("type") == "extra_forbidden":
        if len(loc) == 1:
            return unknown(loc[0])
        parent = ".".join(names)
        sub = _sub_model(fields[-1].annotation) if fields else None
        valid = f"; valid keys: {', '.join(sub.model_fields)}" if sub is not None else ""
        hint = f" ({fields[-1].description})" if fields and fields[-1].description else ""
        return f"{parent}.{loc[len(names)]}: unknown key of {parent}{valid}{hint}"
    where = (".".join(names) or loc[0]) + "".join(f"[{x}]" for x in loc[max(len(names), 1) :])
    hint = f" ({fields[-1].description})" if fields and fields[-1].description else ""
    return f"{where}={error.get('input')!r}: {message}{hint}"


def _form(annotation: Any) -> str:
    """A type as the forms a value may take (``int | float``, ``'head' | 'lora'``, ``list[int]``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _form(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(dict.fromkeys(_form(a) for a in args))
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"list[{_form(args[0])}]" if args else "list"
    if annotation is type(None):
        return "None"
    if _sub_model(annotation) is not None:
        return "dict"
    return getattr(annotation, "__name__", str(annotation))


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
    if _sub_model(annotation) is not None:  # a sub-model is given as a dict of its fields
        return "dict"
    text = str(annotation)
    text = re.sub(r"typing\.|<class '([^']+)'>", lambda m: m.group(1) or "", text)
    return text.replace("NoneType", "None")
