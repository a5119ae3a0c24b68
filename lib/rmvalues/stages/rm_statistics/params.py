"""Parameters of the statistics chapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import pandas as pd

from ...core.handoff import StageInput
from ...core.params import CountBound, StageParams, param, run_name_problem
from ...data.corpora import corpora_input, corpora_run_problem
from ...data.corpus_checks import corpora_run_field
from ...data.prompts import prompt_problem, prompts_checksum
from ...data.scores import published_corpora, published_families, published_inputs, published_rm_table

SCORE_CHOICES = ("published", "live", "both")
#: The scoring stage's output the chapter analyses when ``scores`` is live or both.
LIVE_SCORES = "scores.parquet"

# Bounds of the resampling counts, checked before any work (:class:`~rmvalues.core.params.CountBound`): times
# measured on the development machine (2 CPU cores) on the published scores (34 panels of 270 (RM, prompt)
# points); memory per unit for panels of up to 540 points (e.g. 20 RMs x 27 prompts).
PERMUTATIONS = CountBound(
    1_000_000,
    "p-values resolve to 1e-6, far below any corrected threshold; the panel tests take 0.5 to 1 ms per "
    "permutation on 2 cores: 1,000,000 take 8 to 15 min",
    bytes_each=22_000,
    per="permutation of a panel of 540 points, scipy holding all of a panel's permutations at once",
)
BOOTSTRAP = CountBound(
    200_000,
    "interval bounds no longer move at their rounding long before; the intervals take under 1 ms per resample "
    "on 2 cores: 200,000 take about 3 min",
    bytes_each=10_000,
    per="resample of a panel of 540 points, all of an interval's resamples held at once",
)
NULL_DRAWS = CountBound(
    50_000,
    "the null baseline takes 30 to 40 ms per label permutation on 2 cores: 50,000 take 25 to 35 min",
    bytes_each=5_000,
    per="label permutation, whose statistics and draws are kept",
)
POWER_SIMS = CountBound(
    100_000,
    "a simulated power's Monte Carlo error is at most 0.0016 there; about 1.7 ms per simulated study on 2 "
    "cores: 100,000 take about 3 min",
    bytes_each=10_000,
    per="simulated study of up to 200 RMs per family, all studies drawn at once",
)
CROSSED_DRAWS = CountBound(
    20_000,
    "15 to 30 ms per draw on 2 cores (memory stays flat): 20,000 take 5 to 10 min",
)


class Params(StageParams):
    """Which scores to analyse (published, live, both), on which corpora and prompts, with which resampling."""

    STAGE: ClassVar[str] = "statistics"

    scores: Literal["published", "live", "both"] = param(
        "published",
        help="'published' = the paper's released scores of ten RMs; 'live' = the scoring stage's output; 'both'",
    )
    corpora: list[str] = param(["big2_nouns", "mfd2"], help="corpora to analyse", min_length=1)
    prompts: list[str] = param([], help="prompt ids ([] = all 54)")
    families: list[str] = param(
        ["gemma", "llama"], help="the two base families to contrast (b - a: second minus first)"
    )
    framing_reference: Literal["positive", "negative"] = param(
        "positive",
        help="reference framing of the models' coding: 'positive' as the paper's script "
        "(levels = c('positive','negative')); 'negative' = R's alphabetical default",
    )
    n_permutations: Annotated[int, PERMUTATIONS] = param(9999, help="permutations of the panel tests", ge=9)
    n_bootstrap: Annotated[int, BOOTSTRAP] = param(2000, help="bootstrap resamples of the intervals", ge=50)
    n_null: Annotated[int, NULL_DRAWS] = param(1000, help="label permutations of the null baseline", ge=10)
    seed: int = param(0, help="seed of every resampling", ge=0)
    spec_sign_share: float = param(
        0.95,
        help="specification-curve rule, fixed before any result is read: a verdict is robust or fragile only "
        "if at least this share of its specifications has the sign of the primary specification's estimate",
        gt=0.5,
        le=1.0,
    )
    spec_robust_share: float = param(
        0.5,
        help="specification-curve rule: robust = the sign holds and at least this share of specifications has "
        "(Bonferroni-corrected) p < 0.05",
        gt=0.0,
        le=1.0,
    )
    spec_fragile_share: float = param(
        0.1,
        help="specification-curve rule: fragile = the sign holds and at least this share (but less than "
        "spec_robust_share) is significant; inconclusive otherwise",
        gt=0.0,
        le=1.0,
    )
    n_power_sims: Annotated[int, POWER_SIMS] = param(
        2000, help="simulated studies per point of the power analysis", ge=200
    )
    power_sizes: list[int] = param(
        [8, 12, 20],
        help="RMs per family (both families) at which power is simulated, besides the observed counts",
    )
    n_crossed: Annotated[int, CROSSED_DRAWS] = param(
        1000, help="draws of the bootstrap that resamples RMs and words together", ge=100
    )
    corpora_run: str = corpora_run_field("the words' labels, frequency and valence")
    scoring_run: str = param("default", help="scoring run whose scores are analysed (scores: live or both)")

    def corpora_input(self) -> StageInput:
        return corpora_input(
            self.corpora_run,
            "the words' labels, frequency, valence and token counts",
            self.corpora,
            tokenization=True,
        )

    def scoring_input(self) -> StageInput | None:
        if self.scores == "published":
            return None
        return StageInput(
            "scoring",
            self.scoring_run,
            (LIVE_SCORES,),
            "the live scores analysed",
            param="scoring_run",
            requires=(("corpora", tuple(self.corpora)),),
        )

    def config_used(self) -> dict[str, Any]:
        """The published RMs' mapping and score files (published scores) and the prompts file."""
        if self.scores == "live":
            return {"prompts": prompts_checksum()}
        known = [c for c in self.corpora if c in published_corpora()]
        return {
            "published_rms": published_rm_table().to_dict("records"),
            "files": published_inputs(known),
            "prompts": prompts_checksum(),
        }

    def reads(self) -> list[StageInput]:
        scoring = self.scoring_input()
        return [self.corpora_input(), *([scoring] if scoring is not None else [])]

    def check(self) -> list[str]:
        problems = super().check()
        for key in ("corpora_run", "scoring_run"):
            if p := run_name_problem(key, getattr(self, key)):
                problems.append(p)
        published = list(published_corpora())
        if len(set(self.corpora)) != len(self.corpora):
            problems.append(f"corpora={self.corpora!r}: a corpus is listed twice")
        if self.scores in ("published", "both"):
            bad = [c for c in self.corpora if c not in published]
            if bad:
                problems.append(f"corpora: no published scores for {bad}; published corpora: {published}")
        problems += corpora_run_problem(self.corpora_input(), self.corpora, self.results_root)
        if (p := prompt_problem(self.prompts)) is not None:
            problems.append(p)
        if not self.spec_fragile_share <= self.spec_robust_share:
            problems.append(
                f"spec_fragile_share={self.spec_fragile_share} exceeds spec_robust_share={self.spec_robust_share}: "
                "a fragile verdict needs fewer significant specifications than a robust one"
            )
        if any(n < 3 or n > 200 for n in self.power_sizes):
            problems.append(f"power_sizes={self.power_sizes}: give RMs per family between 3 and 200")
        known = published_families()
        if len(self.families) != 2 or len(set(self.families)) != 2:
            problems.append(
                f"families={self.families!r}: give exactly two different base-model families, e.g. {known}"
            )
        elif self.scores == "published":
            bad = [f for f in self.families if f not in known]
            if bad:
                problems.append(f"families: {bad} not among the published RMs' families {known}")
        else:
            problems += self._live_family_problems(known)
        return problems

    def check_planned(self, upstream: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Before a planned scoring run executes: ``families`` against the families of the RMs it will score."""
        scoring = self.scoring_input()
        promised = (upstream.get(scoring.label) or {}).get("families") if scoring is not None else None
        if promised is None or len(self.families) != 2:
            return []
        return self._family_problems(list(promised), published_families(), "will score RMs of families")

    def _live_family_problems(self, published: list[str]) -> list[str]:
        """When the scoring run's output exists: a problem naming the families it has when ``families``
        asks for one it lacks (published families count too when ``scores`` is both)."""
        scoring = self.scoring_input()
        path = scoring.folder(self.results_root) / LIVE_SCORES if scoring is not None else None
        if path is None or not path.is_file():
            return []  # an absent run is a missing input (or a planned run): checked when it is read
        live = sorted(pd.read_parquet(path, columns=["family"])["family"].dropna().unique())
        return self._family_problems(live, published, "has scores of families")

    def _family_problems(self, live: list[str], published: list[str], verb: str) -> list[str]:
        have = sorted(set(live) | (set(published) if self.scores == "both" else set()))
        bad = [f for f in self.families if f not in have]
        if not bad:
            return []
        where = f"the scoring run {self.scoring_run!r} {verb} {live}"
        if self.scores == "both":
            where += f" (and the published RMs of {published})"
        return [
            f"families: {bad} have no scores: {where}; set families=[...] to two of them, e.g. families={have[:2]}"
        ]
