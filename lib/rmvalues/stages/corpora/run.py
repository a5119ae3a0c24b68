"""Chapter 1, corpora: read the word lists, validate them, annotate their confounds, count their tokens.

``run(params)`` writes ``corpora.parquet`` (the validated, annotated word lists: the input of every later
chapter), ``tokenization.parquet``, ``validation.parquet`` and ``balance.parquet``, the chapter's answers ``findings.json`` (for the findings page) and the CSV downloads
``tables/*.csv``, with a ``manifest.json``. A corpus file outside the project folder is recorded in the manifest
(``extra.outside_project``: its absolute path and sha256) and reported (``outside_project`` in the validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...core.findings import write_findings
from ...core.manifest import RunRecord
from ...data import corpus_checks as checks
from ...data import norms
from ...data.corpora import WordList, input_checksums, load_corpora, wordlist_config
from ...data.datasets import get as get_dataset
from . import analysis
from .findings import findings as chapter_findings
from .params import Params

__all__ = ["Results", "run"]


@dataclass
class Results:
    """Every table of the chapter (see :func:`run`)."""

    params: Params
    output_dir: Path
    wordlist: str
    raw: pd.DataFrame  # the corpus model: every row of every file, plus wildcard expansions
    summary: pd.DataFrame
    issues: pd.DataFrame
    duplicates: pd.DataFrame
    cross_category: pd.DataFrame
    sizes: pd.DataFrame
    stems: pd.DataFrame
    word_sets: pd.DataFrame | None
    multiword: pd.DataFrame
    non_ascii: pd.DataFrame
    respelled: pd.DataFrame  # entries not in Unicode NFC in the file, read (and scored) as their NFC form
    outside: pd.DataFrame  # corpora read from a file outside the project folder: corpus, path, sha256
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # corpora.parquet
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame)
    balance: pd.DataFrame = field(default_factory=pd.DataFrame)
    within: pd.DataFrame = field(default_factory=pd.DataFrame)
    mix: pd.DataFrame = field(default_factory=pd.DataFrame)
    tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    token_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    token_share: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def issue_counts(self) -> pd.DataFrame:
        return checks.issue_counts(self.issues)

    def csv(self, name: str) -> Path:
        """The CSV download of one of the chapter's tables."""
        return self.output_dir / "tables" / f"{name}.csv"

    @property
    def all_balance(self) -> pd.DataFrame:
        """Between-category and within-category comparisons in one table (``balance.parquet``)."""
        return pd.concat([self.balance, self.within], ignore_index=True)


def _load_and_validate(params: Params, record: RunRecord) -> Results:
    """Read the corpora (every row kept) and collect the validation tables."""
    wl = wordlist_config()
    wl = WordList(wl.source, wl.lang, wl.list, params.wordlist_size)
    record.extra["wordlist"] = {**vars(wl)}
    with record.timed("load"):
        raw = load_corpora(params.corpora, wordlist_size=params.wordlist_size)
    record.add_inputs(input_checksums(params.corpora))
    outside = checks.find_outside_project(params.corpora)
    if not outside.empty:
        record.extra["outside_project"] = outside.set_index("corpus").to_dict("index")
    with record.timed("validate"):
        issues = checks.validation_issues(
            raw, tiny_category_threshold=params.tiny_category_threshold, outside=outside
        )
        both = {"big2_dictionary", "big2_expanded"} <= set(params.corpora)
        return Results(
            params=params,
            output_dir=record.output_dir,
            wordlist=wl.describe(),
            raw=raw,
            summary=checks.corpus_summary(raw),
            issues=issues,
            duplicates=checks.find_duplicates(raw),
            cross_category=checks.find_cross_category(raw),
            sizes=checks.category_sizes(raw, threshold=params.tiny_category_threshold),
            stems=checks.stem_expansions(raw),
            word_sets=checks.compare_word_sets(raw, "big2_dictionary", "big2_expanded") if both else None,
            multiword=checks.find_multiword(raw),
            non_ascii=checks.find_non_ascii(raw),
            respelled=checks.find_respelled(raw),
            outside=outside,
        )


def _annotate(res: Results, record: RunRecord) -> None:
    """Frequency and norms of the scored rows, and how the categories differ on them."""
    with record.timed("annotate"):
        res.table = norms.prepare_corpora(res.raw)
    record.add_input(norms.NORMS_DATASET, get_dataset(norms.NORMS_DATASET).sha256)
    res.coverage = norms.norm_coverage(res.table)
    with record.timed("balance"):
        variables = ["zipf_frequency", "valence"]
        res.balance = analysis.category_balance(res.table, variables)
        has_sub = res.table[res.table["subcategory"].notna()]
        res.within = (
            analysis.category_balance(has_sub, variables, group="subcategory", within="category")
            if not has_sub.empty
            else pd.DataFrame()
        )
        res.mix = analysis.subcategory_mix(res.table) if not has_sub.empty else pd.DataFrame()


def _tokenize(res: Results, record: RunRecord) -> None:
    """Tokens per word under each model's tokenizer, bare and with a leading space."""
    with record.timed("tokenize"):
        tokenizers, infos = analysis.load_tokenizers(res.params.models)
        res.tokens = analysis.tokenize_words(res.raw, tokenizers)
    for info in infos:
        record.add_model(**info)
    if not res.tokens.empty:
        res.token_summary = analysis.token_summary(res.tokens)
        res.token_share = analysis.token_share_by_category(res.tokens, res.table)


#: The chapter's tables, as the CSV downloads the book offers beside them (``tables/<name>.csv``).
READER_TABLES = (
    "summary",
    "duplicates",
    "cross_category",
    "sizes",
    "stems",
    "multiword",
    "non_ascii",
    "respelled",
    "coverage",
    "token_summary",
    "token_share",
)


def _write(res: Results, record: RunRecord) -> None:
    record.write_parquet(res.table, "corpora.parquet")
    record.write_parquet(res.tokens, "tokenization.parquet")
    record.write_parquet(res.issues, "validation.parquet")
    record.write_parquet(res.all_balance, "balance.parquet")
    record.write_csv(res.all_balance, "tables/balance.csv")
    for name in READER_TABLES:
        record.write_csv(getattr(res, name), f"tables/{name}.csv")
    if res.word_sets is not None:
        record.write_csv(res.word_sets, "tables/word_sets.csv")
    write_findings(record, chapter_findings(res))
    record.finish()


def run(params: Params, record: RunRecord | None = None) -> Results:
    """The chapter: load and validate the corpora, annotate their confounds, count tokens, write outputs."""
    record = record or RunRecord.for_params(params)
    res = _load_and_validate(params, record)
    _annotate(res, record)
    _tokenize(res, record)
    _write(res, record)
    return res
