"""Parameters of the training-ablation chapter."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import model_validator

from ...core import paths
from ...core.handoff import StageInput
from ...core.params import StageParams, param, run_name_problem
from ...data.corpora import corpora_input, corpora_run_problem
from ...data.corpus_checks import corpora_run_field, unknown_corpora_problem
from ...data.prompts import prompt_problem, prompts_checksum
from ...models.loading import availability_problems
from ...models.registry import entries_used
from .config import AXES, GridSpec, SettingsOverride, TrainingConfigError, check_models, grid_spec

#: The trained RMs of a run, as an extra model-registry file (read by the scoring stage).
REGISTRY_FILE = "registry.yaml"


class Params(StageParams):
    """Which grid of config/training.yaml to train, with which overrides, and what to score its RMs on."""

    STAGE: ClassVar[str] = "training"

    grid: str = param("default", help="grid of config/training.yaml (default, tiny, lora-short, full)")
    models: list[str] = param([], help="base models (registered causal LMs; [] = the grid's)")
    sources: list[str] = param([], help="preference sources of config/training.yaml ([] = the grid's)")
    quantities: list[int] = param([], help="numbers of training pairs ([] = the grid's)")
    seeds: list[int] = param([], help="seeds ([] = the grid's)")
    settings: SettingsOverride = param(  # a dict of TrainSettings fields; recorded as the ones set
        {}, help="training settings merged over the grid's (see config/training.yaml)", validate_default=True
    )
    corpus: str = param("big2_nouns", help="corpus whose words every checkpoint is scored on")
    corpora_run: str = corpora_run_field("the words every checkpoint is scored on")
    prompts: list[str] = param(
        ["greatest_ever_one", "best_world_single", "worst_ever_one", "terrible_world_single"],
        help="prompt ids the checkpoints are scored under ([] = all 54)",
    )
    extra_registry: list[str] = param([], help="more model-registry files (e.g. config/paper_models.yaml)")

    def overrides(self) -> dict[str, Any]:
        """The grid overrides given (non-empty ``models``, ``sources``, ``quantities``, ``seeds``; ``settings``
        when any is set)."""
        return {k: getattr(self, k) for k in (*AXES, "settings") if getattr(self, k)}

    @model_validator(mode="after")
    def _grid_resolves(self) -> Self:
        """The grid with its overrides resolves: the settings' rules hold for the merged settings (the
        configuration's < the grid's < ``settings``) and the axes are valid. Checked with the fields, so a wrong
        combination fails when the parameters are parsed, before any work (also before planned upstream runs)."""
        try:
            self.grid_spec()
        except TrainingConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def grid_spec(self) -> GridSpec:
        """The grid with this run's overrides (:func:`.config.grid_spec`): the one holder of the axes and the
        settings from here on."""
        return grid_spec(self.grid, self.overrides())

    def config_used(self) -> dict[str, Any]:
        """The grid with its overrides (settings, models, sources), the base models' registry entries, the
        preference sources' entries and the prompts file."""
        from .config import load_config

        try:
            spec = self.grid_spec()
        except Exception:
            return {"grid": self.grid}
        cfg = load_config()
        return {
            "grid": spec.axes(),
            "settings": spec.settings.as_dict(),
            "sources": {s: vars(cfg.sources[s]) for s in spec.sources if s in cfg.sources},
            "models": entries_used(spec.models, self.extra_registry),
            "prompts": prompts_checksum(),
        }

    def corpora_input(self) -> StageInput:
        return corpora_input(self.corpora_run, "the words every checkpoint is scored on", [self.corpus])

    def reads(self) -> list[StageInput]:
        return [self.corpora_input()]

    def check(self) -> list[str]:
        problems = super().check()
        if p := run_name_problem("corpora_run", self.corpora_run):
            problems.append(p)
        missing = [f for f in self.extra_registry if not paths.resolve(f).is_file()]
        if missing:
            problems.append(
                f"extra_registry: registry file(s) {missing} do not exist (e.g. config/paper_models.yaml)"
            )
        try:
            spec = self.grid_spec()
            if not missing:
                check_models(spec.models, self.extra_registry)
                problems += availability_problems(spec.models, self.extra_registry)
        except TrainingConfigError as exc:
            problems.append(str(exc))
        if unknown := unknown_corpora_problem([self.corpus], "corpus"):
            problems += unknown
        else:
            problems += corpora_run_problem(self.corpora_input(), [self.corpus], self.results_root)
        if (p := prompt_problem(self.prompts)) is not None:
            problems.append(p)
        return problems
