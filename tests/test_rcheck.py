"""The paper's mixed model in Python (statsmodels) against R (nlme::lme, lmerTest::lmer) on a synthetic
median-rank table of the paper's shape, and nlme's containment degrees of freedom (:func:`containment_df`).

The R tests need ``Rscript`` with nlme and lmerTest (``make test`` installs them through ``make rstats``);
without R they are skipped, the tests of the Python side alone still run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rmvalues.stats import (
    NLME_NO_EM,
    TIGHT_FIT,
    containment_df,
    fit_mixed_model,
    fit_paper_model_r,
    fit_random_slopes,
    r_available,
    r_term_name,
)

#: The paper's coding: families and categories alphabetical, framing positive first.
LEVELS = {
    "family": ["gemma", "llama"],
    "category": ["Agency", "Communion"],
    "framing": ["positive", "negative"],
}
N_PROMPTS = 27
RMS = [(f"gemma-{i}", "gemma") for i in range(4)] + [(f"llama-{i}", "llama") for i in range(6)]
N_OBS = len(RMS) * 2 * 2 * N_PROMPTS
THREE_WAY = "family[T.llama]:category[T.Communion]:framing[T.negative]"


def synthetic_medians(seed: int = 0) -> pd.DataFrame:
    """10 RMs (4 gemma, 6 llama) x 2 categories x 2 framings x 27 prompts: an RM random intercept (SD 4),
    fixed effects with a three-way term, and noise (SD 6); the columns of the chapter's median-rank table."""
    rng = np.random.default_rng(seed)
    rows = []
    for rm, family in RMS:
        intercept = rng.normal(0.0, 4.0)
        for category in LEVELS["category"]:
            for framing in LEVELS["framing"]:
                llama, communion, negative = family == "llama", category == "Communion", framing == "negative"
                effect = (
                    3.0 * llama + 2.0 * communion - 1.5 * negative + 2.5 * (llama and communion and negative)
                )
                for k in range(N_PROMPTS):
                    rows.append(
                        {
                            "corpus": "Big Two",
                            "analysis": "pooled",
                            "subcategory": None,
                            "rm": rm,
                            "family": family,
                            "category": category,
                            "framing": framing,
                            "prompt_id": f"{framing}-{k:02d}",
                            "median_rank": 50.0 + intercept + effect + rng.normal(0.0, 6.0),
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def medians() -> pd.DataFrame:
    return synthetic_medians()


@pytest.fixture(scope="module")
def py_fit(medians):
    return fit_mixed_model(medians, ("gemma", "llama"), levels=LEVELS, fit_options=TIGHT_FIT)


@pytest.fixture(scope="module")
def r_fit(medians):
    missing = r_available()
    if missing is not None:
        pytest.skip(f"R is missing ({missing}); `make test` installs it (make rstats)")
    return fit_paper_model_r(medians, ("gemma", "llama"), LEVELS)


# ---------------------------------------------------------------------------------------------------------
# Without R
# ---------------------------------------------------------------------------------------------------------


def test_containment_df_follows_nlme_between_within_rule(py_fit):
    """By hand for 10 RMs and 1,080 rows: the between-RM stratum has 10 - 1 (family) - 1 (intercept) = 8
    df; the within-RM stratum 1080 - 10 - 6 (the six terms that vary within RMs) = 1064 df; nlme gives the
    intercept the larger of the two."""
    out = containment_df(py_fit).set_index("term")
    expected = {
        "Intercept": N_OBS - 10 - 6,
        "family[T.llama]": 10 - 1 - 1,
        "category[T.Communion]": 1064,
        "framing[T.negative]": 1064,
        "family[T.llama]:category[T.Communion]": 1064,
        "family[T.llama]:framing[T.negative]": 1064,
        "category[T.Communion]:framing[T.negative]": 1064,
        THREE_WAY: 1064,
    }
    assert list(out.index) == list(py_fit.table["term"])
    assert out["df"].to_dict() == expected
    table = py_fit.table.set_index("term")
    np.testing.assert_allclose(out["t"], table["z"], rtol=1e-12)
    np.testing.assert_allclose(out["p_t"], 2 * stats.t.sf(np.abs(table["z"]), out["df"]), rtol=1e-12)
    # with 8 df the family test is less sure than the normal approximation statsmodels reports
    assert out.loc["family[T.llama]", "p_t"] > table.loc["family[T.llama]", "p"]


def test_containment_df_counts_only_the_factors_in_the_model(medians):
    """One category: the within-RM stratum loses the category terms (1080/2 - 10 - 2 = 528 df), the
    between-RM stratum stays at 8."""
    fit = fit_mixed_model(medians[medians["category"] == "Agency"], levels=LEVELS, fit_options=TIGHT_FIT)
    out = containment_df(fit).set_index("term")["df"].to_dict()
    assert out == {
        "Intercept": 528,
        "family[T.llama]": 8,
        "framing[T.negative]": 528,
        "family[T.llama]:framing[T.negative]": 528,
    }


def test_containment_df_refuses_random_slopes(medians):
    fit, _ = fit_random_slopes(medians, levels=LEVELS, within=("framing",))
    assert fit is not None
    with pytest.raises(ValueError, match="only a random intercept"):
        containment_df(fit)


def test_fit_options_are_checked(medians):
    with pytest.raises(ValueError, match="not options of MixedLM.fit"):
        fit_mixed_model(medians, levels=LEVELS, fit_options={"xtol": 1e-9})


def test_r_term_names_map_to_statsmodels_names():
    assert r_term_name("(Intercept)", LEVELS) == "Intercept"
    assert r_term_name("familyllama", LEVELS) == "family[T.llama]"
    assert r_term_name("familyllama:categoryCommunion:framingnegative", LEVELS) == THREE_WAY
    with pytest.raises(ValueError, match="pass the levels"):
        r_term_name("familymistral", LEVELS)


# ---------------------------------------------------------------------------------------------------------
# Against R
# ---------------------------------------------------------------------------------------------------------


def test_python_fit_matches_nlme(py_fit, r_fit):
    assert r_fit.n_obs == N_OBS and r_fit.n_groups == len(RMS)
    assert r_fit.levels == LEVELS
    py = py_fit.table.set_index("term")
    r = r_fit.fixed.set_index("term")
    assert list(r.index) == list(py.index)
    np.testing.assert_allclose(py["coef"], r["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(py["se"], r["se"], rtol=1e-4)
    np.testing.assert_allclose(float(py_fit.result.cov_re.iloc[0, 0]), r_fit.rm_variance, rtol=1e-4)
    np.testing.assert_allclose(float(py_fit.result.scale), r_fit.residual_variance, rtol=1e-4)
    np.testing.assert_allclose(float(py_fit.result.llf), r_fit.loglik, rtol=1e-8)


def test_containment_df_and_t_tests_match_nlme(py_fit, r_fit):
    ours = containment_df(py_fit).set_index("term")
    r = r_fit.fixed.set_index("term")
    assert ours["df"].to_dict() == r["df"].astype(float).to_dict()
    assert r.loc["family[T.llama]", "df"] == 8
    np.testing.assert_allclose(ours["t"], r["t"], rtol=1e-4)
    np.testing.assert_allclose(ours["p_t"], r["p"], rtol=0, atol=1e-6)


def test_lmertest_satterthwaite_agrees_with_nlme(r_fit):
    """Same REML fit in lme4: same estimates and variances; in this balanced design the within-RM terms
        get nlme's within-RM df, the between-RM terms (intercept included, unlike nlme) fewer df than there are
    RMs."""
    nlme = r_fit.fixed.set_index("term")
    satt = r_fit.satterthwaite.set_index("term")
    assert list(satt.index) == list(nlme.index)
    np.testing.assert_allclose(satt["coef"], nlme["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(satt["se"], nlme["se"], rtol=1e-4)
    np.testing.assert_allclose(r_fit.lmer["rm_variance"], r_fit.rm_variance, rtol=1e-4)
    np.testing.assert_allclose(r_fit.lmer["residual_variance"], r_fit.residual_variance, rtol=1e-4)
    between = satt.index.isin(["Intercept", "family[T.llama]"])
    np.testing.assert_allclose(satt.loc[~between, "df"], nlme.loc[~between, "df"], rtol=1e-6)
    assert ((satt.loc[between, "df"] > 1) & (satt.loc[between, "df"] < len(RMS))).all()


def test_r_uses_the_given_reference_levels(medians, r_fit):
    """Negative framing as the reference: R and Python code it the same way, and the three-way term
    flips sign."""
    levels = {**LEVELS, "framing": ["negative", "positive"]}
    r = fit_paper_model_r(medians, ("gemma", "llama"), levels).fixed.set_index("term")
    py = fit_mixed_model(medians, levels=levels, fit_options=TIGHT_FIT).table.set_index("term")
    flipped = "family[T.llama]:category[T.Communion]:framing[T.positive]"
    assert list(r.index) == list(py.index) and flipped in r.index
    np.testing.assert_allclose(py["coef"], r["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.loc[flipped, "coef"], -r_fit.fixed.set_index("term").loc[THREE_WAY, "coef"])


def test_an_r_failure_reports_what_r_said(medians, r_fit):
    bad = medians.copy()
    bad.loc[0, "median_rank"] = np.nan
    with pytest.raises(RuntimeError, match="R said"):
        fit_paper_model_r(bad, ("gemma", "llama"), LEVELS)


def test_nlme_control_reaches_the_same_optimum(medians, py_fit, r_fit):
    """nlme without its EM warm-up (:data:`NLME_NO_EM`): the control reaches R (the estimate moves, if only
    in the last digits) and the optimum is the same."""
    r = fit_paper_model_r(medians, ("gemma", "llama"), LEVELS, nlme_control=NLME_NO_EM)
    assert r.nlme_control == {"niterEM": 0}
    assert r.rm_variance != r_fit.rm_variance
    np.testing.assert_allclose(float(py_fit.result.cov_re.iloc[0, 0]), r.rm_variance, rtol=1e-4)
    np.testing.assert_allclose(py_fit.table["se"], r.fixed["se"], rtol=1e-4)
