"""Parameters of the audit chapter: which reward models to place among the ten published ones, from which
scoring run, on which corpora, with how many resamples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import pandas as pd

from ...core.handoff import StageInput
from ...core.params import CountBound, StageParams, param, run_name_problem
from ...data.corpora import corpora_input, corpora_run_problem
from ...data.corpus_checks import corpora_run_field
from ...data.scores import published_corpora, published_inputs, published_rm_table
from ...models.loading import availability_problems
from ...models.registry import RegistryError, entries_used, registry

#: The scoring stage's outputs the audit reads.
LIVE_SCORES = "scores.parquet"
#: The file of a training run that registers its trained RMs (the scoring stage reads it too).
TRAINING_REGISTRY = "registry.yaml"
#: The bound of ``n_bootstrap`` (:class:`~rmvalues.core.params.CountBound`): measured on the development
#: machine (2 CPU cores), per resample of one RM about 0.7 ms on the Big Two nouns (263 words, 6 prompts), 8 ms
#: on MFD 2.0 with 6 prompts and 40 ms with all 54 (2,040 words).
BOOTSTRAP = CountBound(
    50_000,
    "interval bounds stop moving at their rounding long before; about 40 ms per resample of one RM on MFD 2.0 "
    "with all 54 prompts (2 cores): 50,000 take about 35 min",
    bytes_each=2_000_000,
    per="resample of one RM's score matrix (2,040 words x 54 prompts) and its ranks",
)


class Params(StageParams):
    """The RMs to audit, the scoring run that holds their scores, the corpora and the resampling."""

    STAGE: ClassVar[str] = "audit"

    models: list[str] = param(
        ["gemma3-270m-hh-head-n128-s0"],
        help="registered reward models to audit (kind: reward-model; one row each)",
        min_length=1,
    )
    corpora: list[str] = param(
        ["big2_nouns"],
        help="corpora to audit on (only corpora with published reference scores)",
        min_length=1,
    )
    scoring_run: str = param(
        "default", help="scoring run that holds the RMs' scores (the runner makes one when none does)"
    )
    training_run: str = param(
        "default", help="training run whose trained RMs are registered (as in the scoring run; '' = none)"
    )
    extra_registry: list[str] = param([], help="more model-registry files (as in the scoring run)")
    corpora_run: str = corpora_run_field("the words' labels and token counts")
    n_bootstrap: Annotated[int, BOOTSTRAP] = param(
        1000, help="resamples of the audited RM's prompts and words (its intervals)", ge=50
    )
    seed: int = param(0, help="seed of the resampling", ge=0)

    # -- hand-offs ---------------------------------------------------------------------------------------------
    def scoring_input(self) -> StageInput:
        requires: list[tuple[str, Any]] = [
            ("models", tuple(self.models)),
            ("corpora", tuple(self.corpora)),
            ("candidates", "words"),
            ("training_run", self.training_run),
        ]
        if self.extra_registry:
            requires.append(("extra_registry", tuple(self.extra_registry)))
        return StageInput(
            "scoring",
            self.scoring_run,
            (LIVE_SCORES,),
            "the audited RMs' live scores and how they were scored",
            param="scoring_run",
            requires=tuple(requires),
        )

    def corpora_input(self) -> StageInput:
        return corpora_input(
            self.corpora_run, "the words' labels and token counts", self.corpora, tokenization=True
        )

    def reads(self) -> list[StageInput]:
        return [self.corpora_input(), self.scoring_input()]

    def registry_files(self) -> list[str]:
        """The training run's registry (when ``training_run`` is set), then ``extra_registry``."""
        files = []
        if self.training_run:
            root = self.results_dir()
            files.append(str(root / "training" / self.training_run / TRAINING_REGISTRY))
        return [*files, *self.extra_registry]

    def config_used(self) -> dict[str, Any]:
        """The registry entries of the audited RMs, the published RMs' mapping and score files."""
        from ...core import paths

        files = [f for f in self.registry_files() if paths.resolve(f).is_file()]
        known = [c for c in self.corpora if c in published_corpora()]
        try:
            models = entries_used(self.models, files)
        except RegistryError as exc:
            models = {"error": str(exc)}
        return {
            "models": models,
            "published_rms": published_rm_table().to_dict("records"),
            "files": published_inputs(known),
        }

    # -- checks ------------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = super().check()
        for key in ("scoring_run", "corpora_run", "training_run"):
            value = getattr(self, key)
            if value and (p := run_name_problem(key, value)):
                problems.append(p)
        problems += self._corpus_problems()
        problems += self._model_problems()
        problems += self._scoring_run_problems()
        return problems

    def _corpus_problems(self) -> list[str]:
        published = list(published_corpora())
        if len(set(self.corpora)) != len(self.corpora):
            return [f"corpora={self.corpora!r}: a corpus is listed twice"]
        bad = [c for c in self.corpora if c not in published]
        if bad:
            return [
                f"corpora: {bad} have no published reference scores (the ten reference RMs were scored on "
                f"{published} only), so nothing could place an RM there; audit on corpora={published[:1]} or "
                f"{published}"
            ]
        return corpora_run_problem(self.corpora_input(), self.corpora, self.results_root)

    def _model_problems(self) -> list[str]:
        """Each audited entry must be a registered reward model whose weights can be read (checked once the
        registry files exist; the training run's registry appears when that run has executed)."""
        from ...core import paths

        if len(set(self.models)) != len(self.models):
            return [f"models: a model is listed twice: {self.models}"]
        files = self.registry_files()
        missing = [f for f in files if not paths.resolve(f).is_file()]
        if missing:
            return [
                f"registry file(s) {missing} do not exist (a training run's registry.yaml is written by the "
                "training stage: run it first, or set training_run='' and name the registry file that lists "
                "the RMs in extra_registry)"
            ]
        try:
            known = registry(extra=files)
        except RegistryError as exc:
            return [f"models: the model registry is invalid: {exc}"]
        problems = []
        rms = sorted(n for n, s in known.items() if s.kind == "reward-model")
        for name in self.models:
            if name not in known:
                problems.append(
                    f"models: {name!r} is not a registered model; registered reward models: {', '.join(rms)} "
                    "(register it in config/models.yaml with kind: reward-model, or name the registry file "
                    "that lists it in extra_registry)"
                )
            elif known[name].kind != "reward-model":
                problems.append(
                    f"models: {name!r} is a {known[name].kind}, not a reward model (an audit places a reward "
                    f"model's scores); audit one of {', '.join(rms)}, or register your RM with kind: "
                    "reward-model"
                )
        if problems:
            return problems
        return [
            f"{p} (the audit scores the RM first: make its weights available, then audit it)"
            for p in availability_problems(self.models, files)
        ]

    def check_planned(self, upstream: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Before planned upstream runs execute (a scoring run to make, a training run to redo): the problems
        no upstream output can change, so bad input is refused before any work: corpora without published
        scores, and audited entries that the project's registry (and ``extra_registry``) holds as another
        kind. Names it does not hold may be RMs the planned training run registers."""
        problems = self._corpus_problems()
        try:
            known = registry(extra=self.extra_registry)
        except RegistryError as exc:
            return [*problems, f"models: the model registry is invalid: {exc}"]
        for name in [m for m in self.models if m in known]:
            if known[name].kind != "reward-model":
                problems.append(
                    f"models: {name!r} is a {known[name].kind}, not a reward model (an audit places a reward "
                    "model's scores); audit a registered reward model, or register your RM with kind: "
                    "reward-model"
                )
        if not self.training_run:
            problems += [
                f"models: {name!r} is not a registered model (register it in config/models.yaml with kind: "
                "reward-model, or name the registry file that lists it in extra_registry)"
                for name in self.models
                if name not in known
            ]
        return (
            problems  # weights that are not available: the scoring run's check refuses them before it scores
        )

    def _scoring_run_problems(self) -> list[str]:
        """When the scoring run's scores exist: they must hold every audited RM on every corpus."""
        path = self.scoring_input().folder(self.results_root) / LIVE_SCORES
        if not path.is_file():
            return []  # an absent run is a missing input (or a planned run): checked when it is read
        have = pd.read_parquet(path, columns=["model", "corpus", "framing"]).drop_duplicates()
        lacking = [
            f"{m} on {c}"
            for m in self.models
            for c in self.corpora
            if not ((have["model"] == m) & (have["corpus"] == c)).any()
        ]
        framings = set(have.loc[have["model"].isin(self.models), "framing"])
        if not lacking and framings >= {"positive", "negative"}:
            return []
        if not lacking:
            return [
                f"the scoring run {self.scoring_run!r} scored the RMs under {sorted(framings)} prompts only; the "
                "per-RM statistics contrast positive with negative prompts: score them under both (its `prompts` "
                "parameter, e.g. prompts=[] for all 54)"
            ]
        return [
            f"the scoring run {self.scoring_run!r} holds no scores of {lacking}: leave scoring_run unset (the "
            "runner then makes a scoring run that holds them), or score them first: make chapter NAME=scoring "
            f'RUN=<name> PARAMS="models=[...] corpora=[...]" and set scoring_run=<name>'
        ]
