"""Statistics layer (no chapter code): ranks and median ranks (:mod:`.ranks`), two-group tests, effect sizes,
bootstrap and corrections (:mod:`.twogroup`), mixed models (:mod:`.mixed`), the ANOVA variant (:mod:`.anova`)
and label-permutation nulls (:mod:`.nulls`). Imports only third-party statistics packages."""

from .anova import anova_3way, welch_posthocs
from .mixed import (
    BLAS_THREADS,
    FRAMINGS,
    OPTIMIZERS,
    MixedFit,
    default_formula,
    design,
    fit_mixed_model,
    fit_with_fallback,
    top_family_terms,
)
from .nulls import family_gaps, gap_statistics, null_baseline, permute_within
from .ranks import POINT_KEY, RANK_KEY, all_median_ranks, median_ranks, rank_scores
from .twogroup import (
    bootstrap_ci,
    check_families,
    cohen_d_vectorized,
    cohens_d,
    correct_pvalues,
    mean_ci,
    mean_difference,
    permutation_test,
    permutation_welch,
    stable_seed,
    welch_t,
)

__all__ = [
    "BLAS_THREADS",
    "FRAMINGS",
    "OPTIMIZERS",
    "POINT_KEY",
    "RANK_KEY",
    "MixedFit",
    "all_median_ranks",
    "anova_3way",
    "bootstrap_ci",
    "check_families",
    "cohen_d_vectorized",
    "cohens_d",
    "correct_pvalues",
    "default_formula",
    "design",
    "family_gaps",
    "fit_mixed_model",
    "fit_with_fallback",
    "gap_statistics",
    "mean_ci",
    "mean_difference",
    "median_ranks",
    "null_baseline",
    "permutation_test",
    "permutation_welch",
    "permute_within",
    "rank_scores",
    "stable_seed",
    "top_family_terms",
    "welch_posthocs",
    "welch_t",
]
