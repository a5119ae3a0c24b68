"""The paper's mixed model fitted in R, to cross-check :func:`rmvalues.stats.fit_mixed_model`.

Christian et al. 2026 fitted ``median_rank ~ base_model * Category * prompt_framing`` with
``nlme::lme(..., random = ~1|model)`` (REML) and read t tests with nlme's containment ("between/within")
degrees of freedom. :func:`fit_paper_model_r` runs the same model in R (``Rscript`` with the script
``r/paper_lme.R`` shipped with the package): nlme's fixed effects, variance components and REML
log-likelihood, and the Satterthwaite df of the same fixed effects from ``lmerTest::lmer``. The coding is
explicit: the rows are coded by :func:`rmvalues.stats.design` and R gets every factor's levels in that order
(first = reference), so both sides fit the same design. :func:`r_available` says whether R can be run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from .mixed import FACTORS, default_formula, design

__all__ = [
    "NLME_NO_EM",
    "R_PACKAGES",
    "R_TIMEOUT_S",
    "RFit",
    "fit_paper_model_r",
    "r_available",
    "r_term_name",
]

#: The R packages the cross-check needs (Debian: r-base-core, r-cran-nlme, r-cran-lmertest; ``make rstats``).
R_PACKAGES = ("nlme", "lmerTest")
#: Seconds an ``Rscript`` call may take before it is stopped.
R_TIMEOUT_S = 300
_SCRIPT = "paper_lme.R"
#: ``nlme_control`` of :func:`fit_paper_model_r` that skips lme's EM warm-up iterations. With nlme's defaults
#: (the paper's) the optimizer can stop short where the REML likelihood is flat in the RM variance: on the
#: Big Two table the RM variance is 2.3e-4 (relative) from lme4's and statsmodels' optimum, the log-likelihood
#: 3.6e-8 lower; with these settings within 1e-6. The p-values differ by less than 3e-6 either way.
NLME_NO_EM: Mapping[str, int] = MappingProxyType({"niterEM": 0})
_COEF_COLUMNS = ["term", "coef", "se", "df", "t", "p"]
_FIX = "install R with `make rstats` (Debian: r-base-core r-cran-nlme r-cran-lmertest)"


@dataclass
class RFit:
    """The paper's model fitted in R.

    ``fixed``: ``nlme::lme`` (REML), one row per fixed effect: ``term`` (statsmodels' name, e.g.
    ``family[T.llama]:category[T.Communion]:framing[T.negative]``), ``r_term`` (R's name), ``coef, se, df,
    t, p`` (t test with nlme's containment df). ``satterthwaite``: the same columns from
    ``lmerTest::lmer(... + (1|rm), REML = TRUE)`` with Satterthwaite df. ``rm_variance`` and
    ``residual_variance``: nlme's variance components (RM intercept, residual); ``loglik``: nlme's REML
    log-likelihood; ``lmer``: lme4's ``rm_variance, residual_variance, loglik``; ``nlme_control``: the
    ``lmeControl`` settings used beyond nlme's defaults. ``seconds``: wall time of the ``Rscript`` call.
    """

    fixed: pd.DataFrame
    satterthwaite: pd.DataFrame
    rm_variance: float
    residual_variance: float
    loglik: float
    formula: str
    levels: dict[str, list[str]]
    n_obs: int
    n_groups: int
    lmer: dict[str, float] = field(default_factory=dict)
    nlme_control: dict[str, float | int | str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = float("nan")


def _script() -> Traversable:
    return resources.files(__package__).joinpath("r", _SCRIPT)


def r_available(timeout_s: float = 120) -> str | None:
    """``None`` when ``Rscript`` runs and loads nlme and lmerTest, else why not (a sentence naming the fix)."""
    fix = _FIX
    rscript = shutil.which("Rscript")
    if rscript is None:
        return f"Rscript is not on the PATH: {fix}"
    if not _script().is_file():
        return (
            f"the R script {_SCRIPT} is missing from the installed rmvalues.stats package: reinstall rmvalues"
        )
    load = "suppressPackageStartupMessages({" + "; ".join(f"library({p})" for p in R_PACKAGES) + "})"
    try:
        run = subprocess.run(
            [rscript, "--vanilla", "-e", load], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"Rscript could not be run ({err}): {fix}"
    if run.returncode != 0:
        return f"R lacks {' or '.join(R_PACKAGES)} ({run.stderr.strip()[-300:]}): {fix}"
    return None


def r_term_name(term: str, levels: Mapping[str, Sequence[str]]) -> str:
    """statsmodels' (patsy's) name of R's fixed-effect name ``term`` under treatment coding with ``levels``:
    ``(Intercept)`` -> ``Intercept``, ``familyllama:framingnegative`` ->
    ``family[T.llama]:framing[T.negative]``. ``ValueError`` when a part names no level of ``levels``."""
    if term == "(Intercept)":
        return "Intercept"
    parts = []
    for part in term.split(":"):
        match = [f for f in levels if part.startswith(f) and part[len(f) :] in set(map(str, levels[f]))]
        if len(match) != 1:
            raise ValueError(
                f"R's term {term!r}: {part!r} is not <factor><level> for exactly one factor of "
                f"{dict(levels)}; pass the levels the model was fitted with"
            )
        f = match[0]
        parts.append(f"{f}[T.{part[len(f) :]}]")
    return ":".join(parts)


def fit_paper_model_r(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    levels: Mapping[str, Sequence[str]] | None = None,
    timeout_s: float = R_TIMEOUT_S,
    nlme_control: Mapping[str, float | int | str] | None = None,
) -> RFit:
    """Fit the paper's ``median_rank ~ family * category * framing`` (factors with one level left out, as
    :func:`rmvalues.stats.default_formula`) with a random intercept per RM in R: ``nlme::lme`` (REML) and
    ``lmerTest::lmer`` (REML, Satterthwaite df).

    ``medians``: the rows of one analysis (``rm, family, category, framing, median_rank``); ``levels``: the
    level order of each factor, the first the reference (as :func:`rmvalues.stats.fit_mixed_model`); the
    rows are coded by :func:`rmvalues.stats.design`, and R is given exactly that coding. ``nlme_control``:
    ``nlme::lmeControl`` settings (default none: nlme's defaults, as the paper; :data:`NLME_NO_EM` for the
    exact optimum). ``RuntimeError`` with R's message when R is missing or the script fails.
    """
    if shutil.which("Rscript") is None:
        raise RuntimeError(f"cannot fit the model in R: Rscript is not on the PATH: {_FIX}")
    df = design(medians, families, levels)
    formula = default_formula(df)
    coding = {f: [str(v) for v in df[f].cat.categories] for f in FACTORS if f in df.columns}
    rows = df[["rm", *coding, "median_rank"]].astype({f: str for f in coding})
    with tempfile.TemporaryDirectory(prefix="rmvalues-r-") as tmp, resources.as_file(_script()) as script:
        out = Path(tmp)
        rows.to_csv(out / "data.csv", index=False)
        pd.DataFrame(
            [{"factor": f, "level": lv} for f, lvs in coding.items() for lv in lvs],
            columns=["factor", "level"],
        ).to_csv(out / "levels.csv", index=False)
        control = ",".join(f"{k}={v}" for k, v in (nlme_control or {}).items())
        args = [str(out / "data.csv"), str(out / "levels.csv"), formula, str(out), control]
        t0 = time.perf_counter()
        _run_rscript(script, args, timeout_s)
        seconds = time.perf_counter() - t0
        fixed = _coef_table(out / "nlme.csv", coding)
        satt = _coef_table(out / "satterthwaite.csv", coding)
        info = pd.read_csv(out / "fit.csv").iloc[0]
    return RFit(
        fixed=fixed,
        satterthwaite=satt,
        rm_variance=float(info["rm_variance"]),
        residual_variance=float(info["residual_variance"]),
        loglik=float(info["loglik"]),
        formula=formula,
        levels=coding,
        n_obs=int(info["n_obs"]),
        n_groups=int(info["n_groups"]),
        lmer={k: float(info[f"lmer_{k}"]) for k in ("rm_variance", "residual_variance", "loglik")},
        nlme_control=dict(nlme_control or {}),
        versions={k: str(info[k]) for k in ("r_version", "nlme_version", "lmertest_version")},
        seconds=seconds,
    )


def _run_rscript(script: Path, args: Sequence[str], timeout_s: float) -> None:
    """Run ``Rscript --vanilla script args``; ``RuntimeError`` with R's output when it fails or times out."""
    cmd = [shutil.which("Rscript") or "Rscript", "--vanilla", str(script), *args]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(
            f"Rscript {script.name} took longer than {timeout_s:g} s: pass a larger timeout_s"
        ) from err
    if run.returncode != 0:
        said = run.stderr.strip()[-2000:]
        fix = _FIX if "there is no package" in said else "fix the rows or levels R names"
        raise RuntimeError(f"Rscript {script.name} failed (exit {run.returncode}): {fix}; R said:\n{said}")


def _coef_table(path: Path, levels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """A coefficient table written by the R script, with statsmodels' term names."""
    tab = pd.read_csv(path)
    tab.insert(1, "r_term", tab["term"])
    tab["term"] = [r_term_name(t, levels) for t in tab["r_term"]]
    return tab[["term", "r_term", *_COEF_COLUMNS[1:]]].reset_index(drop=True)
