"""Chapter 5, statistics: the paper's analysis of RM scores, and what it lacks (see :mod:`.analysis`).

``run(params)`` reads the words' labels, frequency and valence from a corpora run, the scores (the paper's
published scores of ten RMs, a scoring run's live scores, or both), and writes ``median_ranks.parquet``,
``model_coding.csv``, ``mixed_model.csv``, ``panel_tests.csv``, ``split_vs_pooled.csv``,
``rm_contrasts.csv``, ``rm_level_interaction.csv``, ``interaction_models.csv``, ``random_slope_fits.csv``,
``random_slope_model.csv``, ``null_baseline.csv``, ``null_distribution.parquet``, ``loo_family_effect.csv``,
``per_rm.csv``, ``anova_lm.csv``, ``anova_posthocs.csv`` and ``covariate_model.csv`` (when some corpus has
normed words), the book's CSV downloads of its tables under ``tables/`` (:data:`READER_TABLES`) and the
chapter's answers ``findings.json`` (for the findings page), with a ``manifest.json``. BLAS runs
single-threaded meanwhile (:data:`rmvalues.stats.BLAS_THREADS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...core.findings import write_findings
from ...core.handoff import input_path
from ...core.manifest import RunRecord
from ...data.corpora import TOKENIZATION_TABLE, read_corpora_table
from ...data.prompts import load_prompts
from ...data.scores import (
    labels_of,
    load_published_scores,
    published_inputs,
    published_lineage_sources,
    published_rm_table,
    read_live_scores,
)
from ...data.tokenizers import family_tokenizers
from ...stats import (
    BLAS_THREADS,
    all_median_ranks,
    check_families,
    null_baseline,
    rank_scores,
)
from ...stats.specification import CurveRule
from . import analysis, design, lineage, rm_level, small_sample, specification
from .findings import findings as chapter_findings
from .params import LIVE_SCORES, Params

__all__ = ["READER_TABLES", "Results", "run"]


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`)."""

    params: Params
    scores: pd.DataFrame  # the long scores table (attrs["unlabelled_words"] for published scores)
    corpora: pd.DataFrame  # the corpora run's table, restricted to params.corpora
    output_dir: Path | None = None  # the run's output folder (the CSV downloads are in its tables/)
    ranked: pd.DataFrame = field(default_factory=pd.DataFrame)
    medians: pd.DataFrame = field(default_factory=pd.DataFrame)  # median_ranks.parquet
    levels: dict[str, list[str]] = field(default_factory=dict)  # the models' coding (first = reference)
    coding: pd.DataFrame = field(default_factory=pd.DataFrame)  # model_coding.csv
    mixed: pd.DataFrame = field(default_factory=pd.DataFrame)  # mixed_model.csv
    fits: dict = field(default_factory=dict)  # {(corpus, analysis, subcategory): MixedFit} of mixed
    panels: pd.DataFrame = field(default_factory=pd.DataFrame)  # panel_tests.csv
    split: pd.DataFrame = field(default_factory=pd.DataFrame)  # split_vs_pooled.csv
    contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)  # rm_contrasts.csv
    rm_level: pd.DataFrame = field(default_factory=pd.DataFrame)  # rm_level_interaction.csv
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # interaction_models.csv
    slope_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # random_slope_fits.csv
    slope_model: pd.DataFrame = field(default_factory=pd.DataFrame)  # random_slope_model.csv
    null_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # null_baseline.csv
    null_draws: pd.DataFrame = field(default_factory=pd.DataFrame)  # null_distribution.parquet
    loo: pd.DataFrame = field(default_factory=pd.DataFrame)  # loo_family_effect.csv
    loo_skipped: list[str] = field(default_factory=list)  # analyses with one RM per family
    per_rm: pd.DataFrame = field(default_factory=pd.DataFrame)  # per_rm.csv
    anova: pd.DataFrame = field(default_factory=pd.DataFrame)  # anova_lm.csv
    posthocs: pd.DataFrame = field(default_factory=pd.DataFrame)  # anova_posthocs.csv
    covariates: pd.DataFrame | None = None  # covariate_model.csv (None: no corpus has normed words)
    covariate_note: str = ""
    tokenization: pd.DataFrame = field(default_factory=pd.DataFrame)  # the corpora run's token counts
    tokenizers: pd.DataFrame = field(default_factory=pd.DataFrame)  # tokenizers.csv
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)  # specification_curve.csv
    curve_labels: pd.DataFrame = field(default_factory=pd.DataFrame)  # specification_labels.csv
    lineages: pd.DataFrame = field(default_factory=pd.DataFrame)  # lineage.csv (the RMs analysed)
    lineage_sources: pd.DataFrame = field(default_factory=pd.DataFrame)  # lineage_sources.csv
    lineage_within: pd.DataFrame = field(default_factory=pd.DataFrame)  # lineage_within.csv
    lineage_adjusted: pd.DataFrame = field(default_factory=pd.DataFrame)  # lineage_adjusted.csv
    power: pd.DataFrame = field(default_factory=pd.DataFrame)  # power.csv
    power_needed: pd.DataFrame = field(default_factory=pd.DataFrame)  # power_needed.csv
    crossed: pd.DataFrame = field(default_factory=pd.DataFrame)  # crossed.csv
    small_sample: pd.DataFrame = field(default_factory=pd.DataFrame)  # mixed_model_small_sample.csv
    r_status: dict = field(default_factory=dict)  # whether the paper's model was fitted in R, and how
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def curve_rule(self) -> CurveRule:
        """The rule that labels each verdict's specification curve (from the parameters)."""
        p = self.params
        return CurveRule(p.spec_sign_share, p.spec_robust_share, p.spec_fragile_share, analysis.ALPHA)

    def csv(self, name: str) -> Path | None:
        """The CSV download of one of the chapter's tables (:data:`READER_TABLES`); None when the run wrote
        none (no output folder, or a table the run did not compute)."""
        if self.output_dir is None:
            return None
        path = self.output_dir / "tables" / f"{name}.csv"
        return path if path.is_file() else None

    @property
    def families(self) -> list[str]:
        return list(self.params.families)

    @property
    def overview(self) -> pd.DataFrame:
        """Per RM and source: family, corpora, prompts, words and scores."""
        return analysis.score_overview(self.scores)

    @property
    def unlabelled_words(self) -> dict[str, list[str]]:
        """Scored words without a label in their corpus (dropped), per corpus (published scores)."""
        return dict(self.scores.attrs.get("unlabelled_words", {}))

    @property
    def three_way(self) -> pd.DataFrame:
        """The family x category x framing rows of the mixed models."""
        return analysis.three_way_table(self.mixed)

    @property
    def split_points(self) -> pd.DataFrame:
        """``split_vs_pooled`` read from intervals over (RM, prompt) points (for comparison)."""
        return analysis.split_vs_pooled(self.panels, basis="(RM, prompt) points")

    @property
    def split_corpora(self) -> list[str]:
        """The corpora analysed split by subcategory (MFD 2.0: virtue and vice)."""
        return sorted(self.medians.loc[self.medians["analysis"] == "split", "corpus"].unique())


def _load(params: Params, record: RunRecord) -> Results:
    """The corpora run's table (labels, frequency, valence) and the scores, every input checksummed."""
    with record.timed("load_scores"):
        table, sums = read_corpora_table(params.corpora_input(), params.results_root, params.corpora)
        record.add_inputs(sums)
        tok_path, tok_digest = input_path(params.corpora_input(), TOKENIZATION_TABLE, params.results_root)
        record.add_input(f"{params.corpora_input().label}/{TOKENIZATION_TABLE}", tok_digest)
        tokenization = pd.read_parquet(tok_path, columns=["corpus", "word", "model", "n_tokens_bare"])
        prompts = params.prompts or None
        parts: list[pd.DataFrame] = []
        attrs: dict = {}
        if params.scores in ("published", "both"):
            published = load_published_scores(labels_of(table, params.corpora), params.corpora, prompts)
            record.add_inputs(published_inputs(params.corpora))
            attrs = dict(published.attrs)
            parts.append(published)
        scoring = params.scoring_input()
        if scoring is not None:
            path, digest = input_path(scoring, LIVE_SCORES, params.results_root)
            record.add_input(f"{scoring.label}/{LIVE_SCORES}", digest)
            parts.append(read_live_scores(path, params.corpora, prompts))
        scores = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        scores.attrs = attrs
        check_families(scores, params.families)
    return Results(
        params=params, scores=scores, corpora=table, output_dir=record.output_dir, tokenization=tokenization
    )


def _paper_analysis(res: Results, record: RunRecord) -> None:
    """Ranks and median ranks, the mixed models, and the panel tests with their split-vs-pooled readings."""
    p = res.params
    with record.timed("ranks"):
        res.ranked = rank_scores(res.scores)
        res.medians = all_median_ranks(res.ranked)
    with record.timed("mixed_model"):
        res.levels = analysis.coding_levels(res.medians, p.framing_reference)
        res.mixed, res.fits = analysis.mixed_models(res.medians, res.families, res.levels)
        res.coding = analysis.coding_table(res.fits)
    with record.timed("small_sample_tests"):
        res.small_sample, res.r_status = small_sample.small_sample_table(res.fits, res.medians, res.families)
    with record.timed("panel_tests"):
        res.panels = analysis.panel_tests(res.medians, res.families, p.n_permutations, p.n_bootstrap, p.seed)
        res.split = analysis.split_vs_pooled(res.panels)


def _rm_level(res: Results, record: RunRecord) -> None:
    """The central interaction per RM: the exact split tests, side by side with the paper's model and the
    random-slope model."""
    p = res.params
    with record.timed("rm_level"):
        res.contrasts = rm_level.rm_contrasts(res.medians, res.families)
        res.rm_level = rm_level.rm_level_tests(res.contrasts, res.families, p.n_bootstrap, p.seed)
    with record.timed("random_slopes"):
        res.models, res.slope_fits, res.slope_model = rm_level.interaction_models(
            res.medians, res.rm_level, res.fits, res.families, res.levels
        )


def _lineage(res: Results, record: RunRecord) -> None:
    """Each RM's developer, recipe, base checkpoint and preference data; the family difference within
    lineages (:mod:`.lineage`)."""
    with record.timed("lineage"):
        known = lineage.lineage_table(published_rm_table())
        res.lineages = lineage.lineage_of_rms(sorted(res.contrasts["rm"].unique()), known)
        used = set(res.lineages["model"])
        sources = published_lineage_sources()
        res.lineage_sources = sources[sources["model"].isin(used)].reset_index(drop=True)
        res.lineage_within = lineage.within_lineage_table(res.contrasts, known, res.families)
        res.lineage_adjusted = lineage.lineage_adjusted(res.contrasts, known, res.families)


def _robustness(res: Results, record: RunRecord) -> None:
    """The null baseline, the leave-one-RM-out refits, the ANOVA variant and the per-RM summaries."""
    p = res.params
    with record.timed("null_baseline"):
        res.null_summary, res.null_draws = null_baseline(res.ranked, res.families, p.n_null, p.seed)
    with record.timed("leave_one_rm_out"):
        res.loo = analysis.leave_one_rm_out(res.medians, res.families, res.levels)
        res.loo_skipped = analysis.loo_skipped(res.medians, res.families)
    with record.timed("anova"):
        res.anova, res.posthocs = analysis.anova_tables(res.medians, res.families)
    res.per_rm = analysis.per_rm_summary(res.medians)


def _specification_curve(res: Results, record: RunRecord) -> None:
    """Every RM-level verdict under every combination of summary, word set, prompt set and test, and its
    label by the parameters' rule (:mod:`.specification`)."""
    with record.timed("specification_curve"):
        single, res.tokenizers = specification.single_token_table(
            res.ranked, res.tokenization, family_tokenizers()
        )
        words = res.corpora[["corpus", "word", "zipf_frequency", "valence"]].drop_duplicates(
            ["corpus", "word"]
        )
        res.curve = specification.specification_curve(
            res.ranked, words, single, load_prompts(), res.families, res.params.seed, analysis.ALPHA
        )
        res.curve_labels = specification.curve_labels(res.curve, res.curve_rule)


def _design(res: Results, record: RunRecord) -> None:
    """The power of the RM-level design and the crossed (RMs and words) intervals (:mod:`.design`)."""
    p = res.params
    with record.timed("power"):
        res.power, res.power_needed = design.power_tables(
            res.rm_level, res.contrasts, res.families, p.power_sizes, p.n_power_sims, p.seed, analysis.ALPHA
        )
    with record.timed("crossed_bootstrap"):
        res.crossed = design.crossed_tables(res.ranked, res.families, p.n_crossed, p.seed)


def _covariates(res: Results, record: RunRecord) -> None:
    """The word-level model with frequency and valence, for the corpora that have normed words."""
    p = res.params
    with record.timed("covariate_model"):
        cov = analysis.covariates_of(res.corpora)
        have, lacking = analysis.normed_corpora(cov, p.corpora)
        if have:
            ranked = res.ranked[res.ranked["corpus"].isin(have)]
            res.covariates = analysis.covariate_model(ranked, cov, res.families, res.levels)
        note = f"covariate model fitted for {', '.join(have)}" if have else "covariate model skipped"
        if lacking:
            note += (
                f"; the corpora stage's run {p.corpora_run!r} has no normed words for {', '.join(lacking)} "
                f"(run that stage with these corpora to include them)"
            )
        res.covariate_note = note


#: The chapter's tables offered as CSV downloads beside their reader versions: ``tables/<name>.csv`` (full
#: precision, every row) from the :class:`Results` attribute named.
READER_TABLES = {
    "overview": "overview",
    "model_coding": "coding",
    "mixed_model": "mixed",
    "panel_tests": "panels",
    "rm_contrasts": "contrasts",
    "rm_level_interaction": "rm_level",
    "interaction_models": "models",
    "random_slope_fits": "slope_fits",
    "null_baseline": "null_summary",
    "loo_family_effect": "loo",
    "covariate_model": "covariates",
    "per_rm": "per_rm",
    "split_vs_pooled": "split",
    "specification_labels": "curve_labels",
    "lineage": "lineages",
    "lineage_sources": "lineage_sources",
    "lineage_within": "lineage_within",
    "lineage_adjusted": "lineage_adjusted",
    "mixed_model_small_sample": "small_sample",
    "power": "power",
    "power_needed": "power_needed",
    "crossed": "crossed",
    "tokenizers": "tokenizers",
    "anova_lm": "anova",
    "anova_posthocs": "posthocs",
}


def _write(res: Results, record: RunRecord) -> None:
    record.seeds.update(
        {
            "seed": res.params.seed,
            "panel_tests": "numpy default_rng([seed, crc32(corpus|analysis|category|subcategory|framing)])",
            "rm_level_interaction": "bootstrap: numpy default_rng([seed, crc32(corpus|analysis|subcategory|"
            "statistic|category|versus)]); the split tests enumerate every split",
            "null_baseline": "numpy default_rng(seed)",
            "power": "numpy default_rng([seed, crc32(corpus|analysis|subcategory|statistic)])",
            "crossed": "numpy default_rng([seed, crc32(corpus|resample)])",
            "specification_curve": "matched word sets: numpy default_rng([seed, crc32(word set|subcategory)])",
        }
    )
    record.extra.update(
        {
            "covariate_model": res.covariate_note,
            "unlabelled_words": res.unlabelled_words,
            "coding": {f: {"reference": lv[0], "levels": lv} for f, lv in res.levels.items()},
            "loo_skipped": res.loo_skipped,
            "r_fit": res.r_status,
            "rms": sorted(res.scores["model"].unique()),
            "n_scores": len(res.scores),
        }
    )
    record.write_parquet(res.medians, "median_ranks.parquet")
    record.write_csv(res.coding, "model_coding.csv")
    record.write_csv(res.mixed, "mixed_model.csv")
    record.write_csv(res.panels, "panel_tests.csv")
    record.write_csv(res.split, "split_vs_pooled.csv")
    record.write_csv(res.contrasts, "rm_contrasts.csv")
    record.write_csv(res.rm_level, "rm_level_interaction.csv")
    record.write_csv(res.models, "interaction_models.csv")
    record.write_csv(res.slope_fits, "random_slope_fits.csv")
    record.write_csv(res.slope_model, "random_slope_model.csv")
    record.write_csv(res.null_summary, "null_baseline.csv")
    record.write_parquet(res.null_draws, "null_distribution.parquet")
    record.write_csv(res.loo, "loo_family_effect.csv")
    record.write_csv(res.per_rm, "per_rm.csv")
    record.write_csv(res.anova, "anova_lm.csv")
    record.write_csv(res.posthocs, "anova_posthocs.csv")
    if res.covariates is not None:
        record.write_csv(res.covariates, "covariate_model.csv")
    record.write_csv(res.curve, "specification_curve.csv")
    record.write_csv(res.curve_labels, "specification_labels.csv")
    record.write_csv(res.tokenizers, "tokenizers.csv")
    record.write_csv(res.lineages, "lineage.csv")
    record.write_csv(res.lineage_sources, "lineage_sources.csv")
    record.write_csv(res.lineage_within, "lineage_within.csv")
    record.write_csv(res.lineage_adjusted, "lineage_adjusted.csv")
    record.write_csv(res.small_sample, "mixed_model_small_sample.csv")
    record.write_csv(res.power, "power.csv")
    record.write_csv(res.power_needed, "power_needed.csv")
    record.write_csv(res.crossed, "crossed.csv")
    for name, attr in READER_TABLES.items():
        if (table := getattr(res, attr)) is not None:
            record.write_csv(table, f"tables/{name}.csv")
    write_findings(record, chapter_findings(res))
    res.timings = dict(record.timings)
    record.finish()


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: load the scores, reproduce the paper's analysis, test its robustness, write outputs."""
    from threadpoolctl import threadpool_limits

    record = record or RunRecord.for_params(params)
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        res = _load(params, record)
        _paper_analysis(res, record)
        _rm_level(res, record)
        _lineage(res, record)
        _robustness(res, record)
        _covariates(res, record)
        _specification_curve(res, record)
        _design(res, record)
    _write(res, record)
    return res
