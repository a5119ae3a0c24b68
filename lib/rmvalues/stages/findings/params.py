"""Parameters of the findings page: which run of each chapter it summarizes."""

from __future__ import annotations

from typing import Any, ClassVar

from ...core.findings import FILE
from ...core.handoff import StageInput
from ...core.params import StageParams, param, run_name_problem

#: The chapters in the page's reading order (the central question first), with what each one asks.
CHAPTERS: dict[str, str] = {
    "statistics": "the ten published reward models",
    "implicit": "the base models' log-probabilities (implicit rewards)",
    "training": "reward models trained from two base models on identical data",
    "scoring": "the reward models scored live in this run",
    "corpora": "the word lists",
}

_HELP = "run of the {} chapter whose findings the page summarizes ('' = leave the chapter out)"


class Params(StageParams):
    """The runs whose findings open the book: by default each chapter's default run."""

    STAGE: ClassVar[str] = "findings"

    statistics_run: str = param("default", help=_HELP.format("statistics"))
    implicit_run: str = param("default", help=_HELP.format("implicit-rewards"))
    training_run: str = param("default", help=_HELP.format("training"))
    scoring_run: str = param("default", help=_HELP.format("scoring"))
    corpora_run: str = param("default", help=_HELP.format("corpora"))

    def runs(self) -> dict[str, str]:
        """``{chapter: run}`` of the chapters on the page, in reading order."""
        return {c: getattr(self, f"{c}_run") for c in CHAPTERS if getattr(self, f"{c}_run")}

    def reads(self) -> list[StageInput]:
        return [
            StageInput(c, run, (FILE,), why=f"the findings about {CHAPTERS[c]}", param=f"{c}_run")
            for c, run in self.runs().items()
        ]

    def config_used(self) -> dict[str, Any]:
        """Nothing beyond the chapters' outputs (their digests are part of the run's key)."""
        return {}

    def check(self) -> list[str]:
        problems = super().check()
        for c in CHAPTERS:
            value = getattr(self, f"{c}_run")
            if value and (p := run_name_problem(f"{c}_run", value)):
                problems.append(p)
        if not self.runs():
            problems.append(
                "every *_run parameter is empty: name at least one chapter run to summarize "
                f"(parameters {', '.join(f'{c}_run' for c in CHAPTERS)})"
            )
        return problems
