"""Loading registered models: weights made local once, tokenizers configured from the registry, causal LMs,
reward models and fresh sequence classifiers, and their provenance for manifests.

* ``gguf-package`` sources are converted ONCE, through transformers' GGUF loader, into an ordinary model
  folder in the user cache (``<cache>/models/<name>-<sha256[:12]>``, float32, de-quantized); later loads read
  that folder (seconds). The conversion is atomic (a temporary folder renamed into place, with a marker file
  holding the GGUF's sha256) and guarded by a file lock, so a killed or concurrent conversion never leaves a
  half folder.
* ``hub`` sources come from the Hugging Face cache (``HF_HUB_OFFLINE=1``: nothing is downloaded; a model not
  in the cache is a clear :class:`~rmvalues.models.registry.ModelUnavailableError`).
* ``local`` sources are model folders. One made by a run of this project (a trained RM) is checked against
  that run's manifest before a stage loads it (:func:`verify_local_model`).
* A folder that cannot be loaded (a corrupted or truncated file) is a :class:`ModelUnavailableError` naming the
  model, the folder and the fix (a converted copy: delete the folder, it is converted again; the marker of a
  conversion records its files' checksums, so the damaged file is named too). :func:`model_info` records the
  checksums of a local or converted folder's files for the manifest.

Typical use::

    from rmvalues.models import loading
    tok = loading.load_tokenizer("gemma3-270m")           # pad token, chat template, padding side applied
    model, tok = loading.load_causal_lm("smollm2-135m-instruct")
    model, tok, spec = loading.load_reward_model(spec)   # a sequence classifier with the registry's read-out
    record.add_model(**loading.model_info("gemma3-270m"))
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
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import paths
from ..core.errors import RmvaluesError
from ..core.files import sha256_file
from ..core.handoff import shown, verify_folder
from ..core.manifest import folder_changes, folder_checksums, folder_digest
from .registry import (
    BUILTIN_CHAT_TEMPLATES,
    CHAT_TEMPLATE_CHOICES,
    DTYPES,
    PAD_RULES,
    ModelSpec,
    ModelUnavailableError,
    RegistryError,
    get_spec,
    registry,
)

if TYPE_CHECKING:  # heavy imports stay lazy: importing rmvalues.models must be cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: File written into a converted model folder; holds the sha256 of the GGUF it was made from.
MARKER_FILE = "rmvalues-source.json"


def _choice(where: str, fieldname: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise RegistryError(
            f"{where}: {fieldname} is {value!r}; valid values: {', '.join(map(str, choices))}"
        )


def _sha256(path: Path) -> str:
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
            "files": folder_checksums(tmp),
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


def availability_problem(name: str | ModelSpec) -> str | None:
    """Why a registered model's weights cannot be had here, checked cheaply before any work (None: they can).

    A ``local`` folder must hold a ``config.json``; a ``hub`` model must be in the local Hugging Face cache
    when ``HF_HUB_OFFLINE`` is set; a ``gguf-package`` model needs its package at the pinned version.
    """
    spec = get_spec(name)
    src = spec.source
    if src.type == "local":
        folder = paths.resolve(os.path.expandvars(src.path or ""))
        if not (folder / "config.json").is_file():
            return (
                f"model {spec.name!r}: its local folder {folder} does not exist or holds no config.json (registry "
                f"{spec.registry_file}); fix source.path, or run the stage that writes it"
            )
        return None
    if src.type == "hub":
        if not _offline():
            return None
        try:
            _hub_snapshot(spec)
        except ModelUnavailableError:
            return (
                f"model {spec.name!r} ({spec.hub_id}@{spec.revision}) is not in the local Hugging Face cache and "
                "HF_HUB_OFFLINE=1: download it once where the hub can be reached (e.g. make chapter ... "
                "HF_HUB_OFFLINE=0), or register a local folder (source: {type: local, path: ...})"
            )
        return None
    try:
        installed = importlib.metadata.version(src.package or "")
    except importlib.metadata.PackageNotFoundError:
        return str(_missing_package(spec, "not installed"))
    if installed != src.version:
        return str(_missing_package(spec, f"version {installed} is installed"))
    return None


def availability_problems(names: Sequence[str], extra: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """:func:`availability_problem` of every registered model in ``names`` (unknown names are skipped: the
    registry check reports them)."""
    reg = registry(extra=extra)
    return [p for n in names if n in reg and (p := availability_problem(reg[n])) is not None]


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True")


def _hub_snapshot(spec: ModelSpec) -> Path:
    from huggingface_hub import snapshot_download

    offline = _offline()
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


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def pin_template_date(template: str, date: str) -> str:
    """A chat template that prints ``date`` where it would print today's date: ``date_string`` is set (the
    Llama 3.x templates print it) and ``strftime_now`` answers ``date`` whatever the format asked for."""
    escaped = date.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'{{%- set date_string = "{escaped}" -%}}'
        f"{{%- macro strftime_now(format) -%}}{escaped}{{%- endmacro -%}}" + template
    )


def configure_tokenizer(tokenizer: PreTrainedTokenizerBase, spec: str | ModelSpec) -> PreTrainedTokenizerBase:
    """Apply the registry's chat template (with a pinned date where the template reads today's date), pad-token
    rule and padding side to ``tokenizer`` (in place)."""
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
    template = tokenizer.chat_template
    if isinstance(template, str) and "strftime_now" in template and "rmvalues: pinned date" not in template:
        if not spec.template_date:
            raise RegistryError(
                f"{where}: its chat template reads today's date (strftime_now), so a prompt would change with the "
                "day it is rendered; pin the date in the registry entry, e.g. template_date: 26 Jul 2024 (the "
                "Llama 3.1 template's own fallback)"
            )
        tokenizer.chat_template = "{#- rmvalues: pinned date -#}" + pin_template_date(
            template, spec.template_date
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


def damaged_folder_message(spec: ModelSpec, folder: Path, exc: BaseException) -> str:
    """What a load failure of a model folder means and how to fix it (the damaged file when the conversion
    marker recorded the checksums)."""
    error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    head = f"model {spec.name!r}: its folder {shown(folder)} cannot be loaded ({error})"
    if spec.source.type == "gguf-package":
        try:
            recorded = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError):
            recorded = None
        changes = [
            f"{name} ({how})"
            for name, how in folder_changes(folder, recorded or {})
            if name != MARKER_FILE and how != "not recorded"
        ]
        copy = f"{head}. It is the converted copy of {spec.source.gguf_file or 'the GGUF'} in the cache"
        fix = (
            f"delete the folder (`rm -r '{folder}'`): the next use converts the model again (about a minute)"
        )
        if recorded and not changes:
            return (
                f"{copy}; its files still match the checksums of the conversion. If the error persists, {fix}"
            )
        why = f": {', '.join(changes)} no longer match the checksums of the conversion" if changes else ""
        return f"{copy}, and the copy is damaged{why}. Fix: {fix}"
    if spec.source.type == "hub":
        return (
            f"{head}. The Hugging Face cache holds a damaged copy of {spec.hub_id}@{spec.revision}: delete it "
            "(`huggingface-cli delete-cache`) and download it again with HF_HUB_OFFLINE=0"
        )
    return (
        f"{head}. If a file of the folder is damaged or missing, restore it (registry {spec.registry_file}), "
        "or run again the stage that wrote it"
    )


@contextlib.contextmanager
def folder_errors(spec: ModelSpec, folder: Path) -> Iterator[None]:
    """Turn a failure to read a model folder (a safetensors header, a JSON or tokenizer file, a missing file)
    into a :class:`ModelUnavailableError` that names the model, the folder and the fix."""
    from safetensors import SafetensorError

    try:
        yield
    except RmvaluesError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise ModelUnavailableError(damaged_folder_message(spec, folder, exc)) from exc
    except Exception as exc:
        if type(exc) is not Exception:  # the tokenizers library raises plain Exceptions for broken files
            raise
        raise ModelUnavailableError(damaged_folder_message(spec, folder, exc)) from exc


def verify_local_model(name: str | ModelSpec) -> dict[str, str]:
    """Before a stage loads a ``local`` model: when a run of this project made its folder (a trained RM),
    every file must still match that run's manifest (else :class:`~rmvalues.core.handoff.ArtefactError`
    naming the file and the run to execute again). Returns the files' checksums as inputs of the reading run
    (``{}`` for other models)."""
    spec = get_spec(name)
    if spec.source.type != "local":
        return {}
    folder = paths.resolve(os.path.expandvars(spec.source.path or ""))
    return verify_folder(folder, f"model {spec.name!r}")


def load_tokenizer(name: str | ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer of a registered model, with pad token, chat template and padding side applied."""
    from transformers import AutoTokenizer

    spec = get_spec(name)
    folder = ensure_local(spec)
    with folder_errors(spec, folder):
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
    with folder_errors(spec, folder):
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
    if spec.template_date:
        info["template_date"] = spec.template_date
    folder = ensure_local(spec)
    info["local_folder"] = str(folder)
    if src.type != "hub":  # a hub snapshot is identified by its pinned revision
        files = folder_checksums(folder)
        info.update(folder_sha256=folder_digest(files), files=files)
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


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads for the duration (the stages' ``threads`` parameter: 0 = torch's default, left as
    it is); the previous number is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (and those of ``datasets``) for the duration:
    a new score head is *meant* to be missing from a base LM, and the book's pages show no bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            # transformers 5 renamed gradient -> activation checkpointing; TRL/PEFT still call the old names
            warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if bars:
            datasets.enable_progress_bars()


def load_reward_model(
    name: str | ModelSpec,
    dtype: str | None = None,
    device: str = "cpu",
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelSpec]:
    """A registered RM as ``AutoModelForSequenceClassification`` and its configured tokenizer, eval mode.

    ``dtype`` overrides the registry's (never quantized); ``device_map`` (e.g. ``"auto"``) spreads a large
    model over the available devices instead of moving it to ``device``. Remote-code RMs may load as another
    class than the registry's ``architecture`` (a warning); stock ones must match it.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    spec = get_spec(name)
    if spec.kind != "reward-model":
        raise RegistryError(f"model {spec.name!r} is a {spec.kind}, not a reward model")
    try:
        folder = ensure_local(spec)
        tok = load_tokenizer(spec)
    except ModelUnavailableError as exc:
        if spec.trust_remote_code:
            raise ModelUnavailableError(
                f"{exc} -- {spec.name} runs remote code (trust_remote_code: true, readout "
                f"{spec.score_readout}): it needs its hub files (modeling code and weights) in the local cache"
            ) from None
        raise
    kwargs: dict[str, Any] = {"device_map": device_map} if device_map is not None else {}
    with folder_errors(spec, folder):
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder),
            dtype=getattr(torch, dtype or spec.dtype),
            attn_implementation=spec.attn_implementation,
            trust_remote_code=spec.trust_remote_code,
            local_files_only=True,
            **kwargs,
        )
    got = type(model).__name__
    if got != spec.architecture and spec.trust_remote_code:
        log.warning("model %s: registry says %s, remote code loads %s", spec.name, spec.architecture, got)
    else:
        _check_architecture(spec, model)
    _sync_model_with_tokenizer(model, tok, spec)
    if device_map is None:
        model.to(device)
    model.eval()
    return model, tok, spec


def load_sequence_classifier(
    name: str | ModelSpec, tokenizer: PreTrainedTokenizerBase, dtype: str = "float32"
) -> PreTrainedModel:
    """A registered causal LM as a one-label ``AutoModelForSequenceClassification`` (a new, undrawn score
    head on the base), pad id synced with ``tokenizer``, eval mode, on CPU: the start of RM training."""
    import torch
    from transformers import AutoModelForSequenceClassification

    spec = get_spec(name)
    folder = ensure_local(spec)
    with quiet_transformers(), folder_errors(spec, folder):
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder),
            num_labels=1,
            dtype=getattr(torch, dtype),
            attn_implementation=spec.attn_implementation,
            trust_remote_code=spec.trust_remote_code,
            local_files_only=True,
        )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model
