"""Parameters of the RM-scoring chapter (also the options of ``python -m rmvalues.stages.scoring``)."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from ...core.handoff import ArtefactError, StageInput, producer
from ...core.manifest import folder_digest
from ...core.params import (
    CountBound,
    StageParams,
    Threads,
    batch_size_field,
    param,
    run_name_problem,
    threads_field,
)
from ...data.corpora import corpora_input, corpora_run_problem
from ...data.corpus_checks import corpora_run_field
from ...data.prompts import prompt_problem, prompts_checksum
from ...models.loading import availability_problems, verify_local_model
from ...models.registry import (
    DTYPES,
    ModelSpec,
    RegistryError,
    entries_used,
    registry,
    unknown_models_problem,
)

CANDIDATE_KINDS = ("words", "vocab")
DTYPE_CHOICES = ("auto", *DTYPES)
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Default number of vocabulary ids per work unit (vocab mode).
DEFAULT_CHUNK_SIZE = 32768
#: The file of a training run that registers its trained RMs.
TRAINING_REGISTRY = "registry.yaml"
#: The bound of ``batch_size``, checked before any work (:class:`~rmvalues.core.params.CountBound`).
BATCH = CountBound(
    16_384,
    "4 x the automatic batch on a GPU (4,096; 64 on the CPU); the scorer halves a batch that runs out of "
    "memory, so a larger one only costs failed attempts",
)


class Params(StageParams):
    """What to score and how: registered RMs x corpus words (or the whole vocabulary) x prompts."""

    STAGE: ClassVar[str] = "scoring"

    models: list[str] = param(
        ["gemma3-270m-hh-head-n128-s0", "smollm2-135m-instruct-hh-head-n128-s0"],
        help="registered reward models to score (kind: reward-model; the training run's RMs included)",
        min_length=1,
    )
    training_run: str = param(
        "default", help="training run whose trained RMs are registered for this run ('' = none)"
    )
    extra_registry: list[str] = param([], help="more model-registry files (e.g. config/paper_models.yaml)")
    corpora: list[str] = param(["big2_nouns"], help="corpora whose words are scored (candidates: words)")
    corpora_run: str = corpora_run_field("the words")
    prompts: list[str] = param(
        [
            "best_ever_one",
            "greatest_ever_one",
            "good_ever_one",
            "worst_ever_one",
            "bad_ever_one",
            "terrible_ever_one",
        ],
        help="prompt ids ([] = all 54)",
    )
    candidates: Literal["words", "vocab"] = param(
        "words", help="score corpus words, or every vocabulary token"
    )
    max_words: int | None = param(None, help="at most this many words per corpus (None: all)", ge=1)
    batch_size: Annotated[int, BATCH] = batch_size_field("candidates")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto", help="'auto' = the registry's dtype"
    )
    device: Literal["auto", "cpu", "cuda"] = param("auto", help="'auto' = cuda when available")
    method: Literal["auto", "full", "prefix-cache", "shared-prefix"] = param(
        "auto", help="scoring method (auto: shared-prefix for stock classifiers)"
    )
    device_map: Literal["auto", "balanced", "sequential"] | None = param(
        None, help="'auto': spread a model larger than one GPU over the GPUs"
    )
    chunk_size: int = param(DEFAULT_CHUNK_SIZE, help="vocabulary ids per work unit (candidates: vocab)", ge=1)
    system_prompt: str | None = param(
        None, help="system turn before the prompt (None: the template's default)"
    )
    threads: Threads = threads_field()

    # -- hand-offs ---------------------------------------------------------------------------------------------
    def corpora_input(self) -> StageInput:
        return corpora_input(self.corpora_run, "the words to score", self.corpora)

    def training_input(self) -> StageInput | None:
        if not self.training_run:
            return None
        return StageInput(
            "training",
            self.training_run,
            (TRAINING_REGISTRY,),
            "the trained RMs' registry",
            param="training_run",
        )

    def reads(self) -> list[StageInput]:
        out = [self.corpora_input()] if self.candidates == "words" else []
        training = self.training_input()
        return [*out, training] if training is not None else out

    def registry_files(self) -> list[str]:
        """The extra registry files of this run: the training run's registry, then ``extra_registry``."""
        training = self.training_input()
        files = [str(training.folder(self.results_root) / TRAINING_REGISTRY)] if training is not None else []
        return [*files, *self.extra_registry]

    def config_used(self) -> dict[str, Any]:
        """The registry entries of the scored RMs (the training run's included), the prompts file, and for an
        RM a run made (a trained RM) the digest of its files as that run's manifest records them (so a model
        trained again makes this run stale, even when its registry entry is unchanged)."""
        from ...core import paths

        files = [f for f in self.registry_files() if paths.resolve(f).is_file()]
        used: dict[str, Any] = {"models": entries_used(self.models, files), "prompts": prompts_checksum()}
        made = {}
        for name, spec in self._specs(files).items():
            folder = paths.resolve(os.path.expandvars(spec.source.path or ""))
            run = producer(folder) if spec.source.type == "local" else None
            if run is not None:
                made[name] = folder_digest(run.recorded)
        if made:
            used["model_files"] = made
        return used

    def _specs(self, files: list[str]) -> dict[str, ModelSpec]:
        """The registry entries of the scored RMs that the registry knows ({} when a registry is invalid)."""
        try:
            known = registry(extra=files)
        except RegistryError:
            return {}
        return {m: known[m] for m in self.models if m in known}

    def made_model_files(self) -> dict[str, dict[str, str]]:
        """Per scored RM that a run of this project made (a trained RM): its files' checksums, checked against
        that run's manifest before any work (:func:`rmvalues.models.loading.verify_local_model`; raises
        :class:`~rmvalues.core.handoff.ArtefactError` naming the changed file and the run to execute again).
        Models no run made are left out."""
        out = {}
        for name, spec in self._specs(self.registry_files()).items():
            if files := verify_local_model(spec):
                out[name] = files
        return out

    def promises(self) -> dict[str, Any]:
        """The base-model families of the scored RMs (the ``family`` column of ``scores.parquet``), from the
        registry; ``{}`` while a registry file is missing (a training run not yet executed) or a model unknown."""
        from ...core import paths

        files = self.registry_files()
        if not all(paths.resolve(f).is_file() for f in files):
            return {}
        try:
            known = registry(extra=files)
        except RegistryError:
            return {}
        if not all(m in known for m in self.models):
            return {}
        return {"families": sorted({known[m].family for m in self.models})}

    def selected_prompts(self) -> list[str]:
        from ...data.prompts import select_prompts

        return select_prompts(self.prompts)

    # -- checks ------------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        from ...core import paths

        problems = super().check()
        for key in ("corpora_run", "training_run"):
            value = getattr(self, key)
            if value and (p := run_name_problem(key, value)):
                problems.append(p)
        missing = [f for f in self.registry_files() if not paths.resolve(f).is_file()]
        if missing:
            problems.append(
                f"registry file(s) {missing} do not exist (a training run's registry.yaml is written by the "
                "training stage: run it first, or set training_run='' and name other RMs)"
            )
        else:
            problem = unknown_models_problem(
                "models",
                self.models,
                "reward-model",
                self.registry_files(),
                hint="add one to config/models.yaml with kind: reward-model, or name the registry file that "
                "lists it in extra_registry",
            )
            if problem:
                problems.append(problem)
            else:
                problems += availability_problems(self.models, self.registry_files())
                problems += self._made_model_problems()
        problems += self._corpus_problems()
        if (p := prompt_problem(self.prompts)) is not None:
            problems.append(p)
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                problems.append("device='cuda' but no CUDA device is available here; use 'cpu' or 'auto'")
        return problems

    def _made_model_problems(self) -> list[str]:
        """Trained RMs whose files no longer match the manifest of the training run that made them."""
        problems = []
        for spec in self._specs(self.registry_files()).values():
            try:
                verify_local_model(spec)
            except ArtefactError as exc:
                problems.append(str(exc))
        return problems

    def _corpus_problems(self) -> list[str]:
        if self.candidates != "words":
            return []
        from ...data.corpora import list_corpora
        from ...data.corpus_checks import unknown_corpora_problem

        if not self.corpora:
            return [
                f"corpora: give at least one corpus name ({', '.join(list_corpora())}) when candidates='words'"
            ]
        if bad := unknown_corpora_problem(self.corpora):
            return bad
        return corpora_run_problem(self.corpora_input(), self.corpora, self.results_root)
