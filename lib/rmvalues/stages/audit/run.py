"""The audit chapter: place one or more reward models among the ten published reward models.

``run(params)`` reads the audited RMs' live scores from a scoring run (its ``scores.parquet``, verified against
its manifest, and the manifest's record of how each RM was scored), the words' labels and token counts from a
corpora run, and the published scores of the ten reference RMs; it restricts both to the same words and
prompts (:func:`.placement.common_design`), computes every RM's per-RM statistics with the statistics chapter's
code (:func:`rmvalues.stats.rm_values`), and places each audited RM among each reference family
(:mod:`.placement`). Outputs: ``audited_values.csv``, ``reference_values.csv``, ``placement.csv``,
``bootstrap.parquet``, ``leave_one_out.csv``, ``loo_summary.csv``, ``reference_limits.csv``,
``tokenization.csv``, ``scoring.csv``, ``design.csv``, the CSV downloads of the page's tables under
``tables/`` (:data:`READER_TABLES`) and ``manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...core.files import sha256_file
from ...core.handoff import MANIFEST, input_path, read_upstream_manifest
from ...core.manifest import RunRecord
from ...data.corpora import TOKENIZATION_TABLE, read_corpora_table
from ...data.scores import labels_of, load_published_scores, published_inputs, read_live_scores
from ...data.tokenizers import family_tokenizers
from ...models.registry import registry
from ...stats import rm_values
from . import placement as pl
from . import tables
from .params import LIVE_SCORES, Params

__all__ = ["READER_TABLES", "Results", "run"]


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`)."""

    params: Params
    output_dir: Path
    live: pd.DataFrame = field(default_factory=pd.DataFrame)  # the audited RMs' scores compared
    published: pd.DataFrame = field(default_factory=pd.DataFrame)  # the references' scores compared
    design: pd.DataFrame = field(default_factory=pd.DataFrame)  # design.csv: words and prompts per corpus
    audited: pd.DataFrame = field(default_factory=pd.DataFrame)  # audited_values.csv
    reference: pd.DataFrame = field(default_factory=pd.DataFrame)  # reference_values.csv
    families: pd.DataFrame = field(default_factory=pd.DataFrame)  # the families' summaries
    draws: pd.DataFrame = field(default_factory=pd.DataFrame)  # bootstrap.parquet
    placed: pd.DataFrame = field(default_factory=pd.DataFrame)  # placement.csv
    loo: pd.DataFrame = field(default_factory=pd.DataFrame)  # leave_one_out.csv
    loo_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # loo_summary.csv
    limits: pd.DataFrame = field(default_factory=pd.DataFrame)  # reference_limits.csv
    tokenization: pd.DataFrame = field(default_factory=pd.DataFrame)  # tokenization.csv
    scoring: pd.DataFrame = field(default_factory=pd.DataFrame)  # scoring.csv

    def csv(self, name: str) -> Path:
        """The CSV download of one of the page's tables (:data:`READER_TABLES`)."""
        return self.output_dir / "tables" / f"{name}.csv"


def _load(params: Params, record: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """The corpora run's labels and token counts, the audited RMs' live scores and the scoring run's
    manifest, each checksummed."""
    with record.timed("load"):
        table, sums = read_corpora_table(params.corpora_input(), params.results_root, params.corpora)
        record.add_inputs(sums)
        tok_path, tok_digest = input_path(params.corpora_input(), TOKENIZATION_TABLE, params.results_root)
        record.add_input(f"{params.corpora_input().label}/{TOKENIZATION_TABLE}", tok_digest)
        tokenization = pd.read_parquet(tok_path, columns=["corpus", "word", "model", "n_tokens_bare"])
        scoring = params.scoring_input()
        path, digest = input_path(scoring, LIVE_SCORES, params.results_root)
        record.add_input(f"{scoring.label}/{LIVE_SCORES}", digest)
        manifest = read_upstream_manifest(scoring, params.results_root)
        record.add_input(
            f"{scoring.label}/{MANIFEST}", sha256_file(scoring.folder(params.results_root) / MANIFEST)
        )
        live = read_live_scores(path, params.corpora)
        live = live[live["model"].isin(params.models)].reset_index(drop=True)
    return table, live, manifest, tokenization


def _design_table(live: pd.DataFrame, published: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """Per corpus: the words and prompts compared, and how many of the audited RMs' scored words and prompts
    were left out because a reference RM lacks them."""
    rows = []
    for corpus, grp in live.groupby("corpus", sort=True):
        had = before[before["corpus"] == corpus]
        rows.append(
            {
                "corpus": corpus,
                "n_words": int(grp["word"].nunique()),
                "n_prompts": int(grp["prompt_id"].nunique()),
                "n_positive": int(grp.loc[grp["framing"] == "positive", "prompt_id"].nunique()),
                "n_negative": int(grp.loc[grp["framing"] == "negative", "prompt_id"].nunique()),
                "n_words_dropped": int(had["word"].nunique() - grp["word"].nunique()),
                "n_prompts_dropped": int(had["prompt_id"].nunique() - grp["prompt_id"].nunique()),
                "n_reference_rms": int(published.loc[published["corpus"] == corpus, "model"].nunique()),
                "prompts": ", ".join(sorted(grp["prompt_id"].unique())),
            }
        )
    return pd.DataFrame(rows)


def _place(res: Results, record: RunRecord) -> None:
    p = res.params
    with record.timed("statistics"):
        res.audited = rm_values(res.live)
        res.reference = rm_values(res.published)
        res.families = pl.family_summary(res.reference)
    with record.timed("bootstrap"):
        res.draws = pl.bootstrap_values(res.live, p.n_bootstrap, p.seed)
    with record.timed("placement"):
        res.placed = pl.placement(res.audited, res.reference, res.draws)
        res.loo = pl.leave_one_out(res.audited, res.reference)
        res.loo_summary = pl.loo_summary(res.loo)
        counts = res.reference.drop_duplicates(["rm"]).groupby("family")["rm"].size()
        res.limits = pd.DataFrame([{"family": f, **pl.reference_limits(int(n))} for f, n in counts.items()])


def _describe(
    res: Results, table: pd.DataFrame, tokenization: pd.DataFrame, manifest: dict, record: RunRecord
):
    p = res.params
    with record.timed("tokenization"):
        words = res.live[["corpus", "word"]].drop_duplicates()
        res.tokenization = tables.tokenization_table(
            res.live, words, tokenization, family_tokenizers(), sorted(res.reference["family"].unique())
        )
    specs = registry(extra=p.registry_files())
    n_prompts = res.live.groupby("model")["prompt_id"].nunique().to_dict()
    res.scoring = tables.scoring_facts(p.models, manifest, specs, n_prompts)


#: The page's tables as CSV downloads: ``tables/<name>.csv`` from the :class:`Results` attribute named.
READER_TABLES = {
    "placement": "placed",
    "reference_values": "reference",
    "audited_values": "audited",
    "families": "families",
    "loo_summary": "loo_summary",
    "leave_one_out": "loo",
    "reference_limits": "limits",
    "tokenization": "tokenization",
    "scoring": "scoring",
    "design": "design",
}


def _write(res: Results, record: RunRecord) -> None:
    record.seeds.update(
        {
            "seed": res.params.seed,
            "bootstrap": "numpy default_rng([seed, crc32(rm|corpus)]) per RM and corpus",
        }
    )
    record.extra.update({"audited": list(res.params.models), "n_rows_compared": len(res.live)})
    record.write_csv(res.audited, "audited_values.csv")
    record.write_csv(res.reference, "reference_values.csv")
    record.write_csv(res.placed, "placement.csv")
    record.write_parquet(res.draws, "bootstrap.parquet")
    record.write_csv(res.loo, "leave_one_out.csv")
    record.write_csv(res.loo_summary, "loo_summary.csv")
    record.write_csv(res.limits, "reference_limits.csv")
    record.write_csv(res.tokenization, "tokenization.csv")
    record.write_csv(res.scoring, "scoring.csv")
    record.write_csv(res.design, "design.csv")
    for name, attr in READER_TABLES.items():
        record.write_csv(getattr(res, attr), f"tables/{name}.csv")
    record.finish()


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: load the scores, compare on the same words and prompts, place, describe, write."""
    record = record or RunRecord.for_params(params)
    table, live, manifest, tokenization = _load(params, record)
    res = Results(params, record.output_dir)
    with record.timed("published_scores"):
        published = load_published_scores(labels_of(table, params.corpora), params.corpora)
        record.add_inputs(published_inputs(params.corpora))
    res.live, res.published = pl.common_design(live, published)
    res.design = _design_table(res.live, res.published, live)
    _place(res, record)
    _describe(res, table, tokenization, manifest, record)
    _write(res, record)
    return res
