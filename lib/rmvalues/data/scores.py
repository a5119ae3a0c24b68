"""Reward-model scores in one long table, shared by every chapter.

Every RM score the book analyses (the paper's published scores, or scores computed live by the scoring stage)
is a row of the same long table, :data:`SCORE_COLUMNS`:

===========  ==========================================================================================
model        hub id of the reward model (``Skywork/Skywork-Reward-Gemma-2-27B``)
revision     hub revision the scores were computed with (null when unknown, as for the published scores)
family       base-model family the RM was fine-tuned from (``gemma``, ``llama``)
source       ``published`` (released with the paper) or ``live`` (computed by the scoring stage)
prompt_id    key of the prompt (``greatest_ever_one``): adjective _ frame _ concision style
framing      ``positive`` (best, greatest, most good) or ``negative`` (worst, most bad, most terrible)
corpus       corpus name (``big2_nouns``, ``mfd2``)
category     the word's category (Big Two: Agency/Communion; MFD 2.0: the foundation)
subcategory  finer label (MFD 2.0: virtue/vice; null for the Big Two)
word         the scored word (the RM's one-word answer to the prompt)
n_tokens     number of tokens of the answer (null where unknown)
score        the reward
===========  ==========================================================================================

A word that carries two labels in its corpus appears once per label (one row per category); ranking code
must rank each (model, prompt, corpus) on unique words (see :func:`rmvalues.stats.rank_scores`).

The published scores are loaded through the data layer (:func:`rmvalues.data.datasets.fetch`), so the analysis runs
on any laptop. The mapping of published files to the ten RMs and their families is data:
``config/published_rms.yaml``, which also holds each RM's lineage (developer, the recipe or checkpoint it
descends from, base model, preference data), each fact with its source (:func:`published_rm_table`,
:func:`published_lineage_sources`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from ..core import paths
from . import datasets
from .prompts import FRAMINGS, PROMPTS_DATASET, framing_of, select_prompts

#: Columns of the long scores table, in order.
SCORE_COLUMNS: tuple[str, ...] = (
    "model",
    "revision",
    "family",
    "source",
    "prompt_id",
    "framing",
    "corpus",
    "category",
    "subcategory",
    "word",
    "n_tokens",
    "score",
)

#: Valid values of ``source``.
SOURCES: tuple[str, ...] = ("published", "live")


# -- the ten published RMs --------------------------------------------------------------------------------


#: The lineage facts of a published RM (``config/published_rms.yaml``), each with its source.
LINEAGE_FACTS: tuple[str, ...] = ("developer", "lineage", "base_model", "preference_data")
#: Columns of :func:`published_rm_table`.
PUBLISHED_RM_COLUMNS: tuple[str, ...] = ("model", "file", "family", "label", "revision", *LINEAGE_FACTS)
#: Columns of :func:`published_lineage_sources`.
LINEAGE_SOURCE_COLUMNS: tuple[str, ...] = ("model", "fact", "value", "source", "note")
#: What the source note of a fact left null must say.
NOT_VERIFIED = "not verified offline"
_RM_FIELDS = (*PUBLISHED_RM_COLUMNS, "sources")
_LINEAGE_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class LineageSource:
    """Where one lineage fact of a published RM comes from: the model card (``https://huggingface.co/<id>``)
    or a paper (``arXiv:<id>``), and a short quote or paraphrase of what it says."""

    fact: str
    source: str | None
    note: str


@dataclass(frozen=True)
class PublishedRM:
    """One RM of the paper's release: its score-file key, base family and label, and its lineage (each fact
    ``None`` where it could not be verified, with a source note saying so)."""

    model: str
    file: str
    family: str
    label: str
    revision: str | None = None
    developer: str | None = None
    lineage: str | None = None
    base_model: str | None = None
    preference_data: str | None = None
    sources: tuple[LineageSource, ...] = ()


def published_rms_path() -> Path:
    return paths.config_dir() / "published_rms.yaml"


@lru_cache(maxsize=2)
def _published_config(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def _sources_of(entry: dict, where: str) -> tuple[LineageSource, ...]:
    """The ``sources`` mapping of one RM entry: one ``{source, note}`` per lineage fact, validated."""
    raw = entry["sources"]
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: `sources` must map each of {', '.join(LINEAGE_FACTS)} to {{source, note}}"
        )
    out = []
    for fact in LINEAGE_FACTS:
        item = raw.get(fact)
        if not isinstance(item, dict) or "source" not in item or not str(item.get("note") or "").strip():
            raise ValueError(
                f"{where}: sources.{fact} is missing or lacks `source`/`note`; give the model card URL or arXiv "
                f"id and a short quote (source null and a note saying {NOT_VERIFIED!r} where unverified)"
            )
        source, note = item["source"], str(item["note"]).strip()
        if entry[fact] is None and NOT_VERIFIED not in note:
            raise ValueError(f"{where}: {fact} is null but sources.{fact}.note does not say {NOT_VERIFIED!r}")
        if entry[fact] is not None and not source:
            raise ValueError(f"{where}: {fact} is given without a source; add sources.{fact}.source")
        out.append(LineageSource(fact, None if source is None else str(source), note))
    extra = sorted(set(raw) - set(LINEAGE_FACTS))
    if extra:
        raise ValueError(
            f"{where}: sources name unknown fact(s) {extra}; the facts are {', '.join(LINEAGE_FACTS)}"
        )
    return tuple(out)


def read_published_rms(path: str | os.PathLike[str]) -> list[PublishedRM]:
    """The RMs of a published-RMs file (the format of ``config/published_rms.yaml``), validated: every RM has
    every field of :data:`PUBLISHED_RM_COLUMNS` and a source for each lineage fact; a missing or unknown field
    is a ``ValueError`` naming the RM, the field and the file."""
    entries = _published_config(str(path)).get("rms")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: no `rms` list; each RM needs the fields {', '.join(_RM_FIELDS)}")
    rms = []
    for i, entry in enumerate(entries):
        name = entry.get("model", f"entry {i + 1}") if isinstance(entry, dict) else f"entry {i + 1}"
        where = f"{path}: RM {name!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a mapping of its fields ({', '.join(_RM_FIELDS)})")
        missing = [f for f in _RM_FIELDS if f not in entry]
        if missing:
            raise ValueError(
                f"{where} lacks field(s) {', '.join(missing)}; add them (null where unknown, with a source note "
                f"saying {NOT_VERIFIED!r}; see the comment block at the top of the file)"
            )
        unknown = sorted(set(entry) - set(_RM_FIELDS))
        if unknown:
            raise ValueError(
                f"{where} has unknown field(s) {unknown}; the fields are {', '.join(_RM_FIELDS)}"
            )
        lineage = entry["lineage"]
        if lineage is not None and not _LINEAGE_KEY.match(str(lineage)):
            raise ValueError(f"{where}: lineage {lineage!r} is not a short lowercase key (e.g. skywork, grm)")
        fields = {f: entry[f] for f in PUBLISHED_RM_COLUMNS}
        rms.append(PublishedRM(**fields, sources=_sources_of(entry, where)))
    return rms


def published_rms() -> list[PublishedRM]:
    """The ten RMs of the paper's release with their base family and lineage (``config/published_rms.yaml``)."""
    return read_published_rms(published_rms_path())


def published_rm_table() -> pd.DataFrame:
    """:data:`PUBLISHED_RM_COLUMNS` of the published RMs: ``model, file, family, label, revision`` and the
    lineage facts ``developer, lineage, base_model, preference_data`` (``None`` where unverified). The sources
    of the facts are in :func:`published_lineage_sources` (one row per fact), not in this table."""
    return pd.DataFrame(
        [{c: rm.__dict__[c] for c in PUBLISHED_RM_COLUMNS} for rm in published_rms()],
        columns=list(PUBLISHED_RM_COLUMNS),
    )


def published_lineage_sources() -> pd.DataFrame:
    """One row per published RM and lineage fact: :data:`LINEAGE_SOURCE_COLUMNS` (``model, fact, value,
    source, note``): the fact's value, its source (model card URL or arXiv id) and what the source says."""
    rows = [
        {"model": rm.model, "fact": s.fact, "value": rm.__dict__[s.fact], "source": s.source, "note": s.note}
        for rm in published_rms()
        for s in rm.sources
    ]
    return pd.DataFrame(rows, columns=list(LINEAGE_SOURCE_COLUMNS))


def published_corpora() -> dict[str, str]:
    """Corpora with published scores: ``{corpus name: folder of the release}``."""
    return dict(_published_config(str(published_rms_path()))["corpus_folders"])


def published_families() -> list[str]:
    return sorted({rm.family for rm in published_rms()})


_FILE_PREFIX = re.compile(r"^(big2_rewards_|MFD20_rewards_)")


def published_score_files(corpus: str) -> dict[str, str]:
    """``{RM hub id: data-set name}`` of the published score files of ``corpus``.

    Each file is mapped to its RM from its name (prefix removed) and to the corpus from its folder; an RM
    without a file, or a file matching no RM, is an error.
    """
    folders = published_corpora()
    if corpus not in folders:
        raise ValueError(
            f"no published scores for corpus {corpus!r}; published corpora: {', '.join(folders)}"
        )
    prefix = f"paper/scores/{folders[corpus]}/"
    by_file = {rm.file: rm.model for rm in published_rms()}
    out: dict[str, str] = {}
    for name in sorted(datasets.catalogue()):
        if not name.startswith(prefix):
            continue
        key = _FILE_PREFIX.sub("", name[len(prefix) :])
        if key not in by_file:
            raise ValueError(f"published score file {name!r} matches no RM in {published_rms_path()}")
        if by_file[key] in out:
            raise ValueError(
                f"two published score files for {by_file[key]} in {corpus}: {out[by_file[key]]}, {name}"
            )
        out[by_file[key]] = name
    missing = sorted(set(by_file.values()) - set(out))
    if missing:
        raise ValueError(f"no published {corpus} scores for {', '.join(missing)} in config/datasets.yaml")
    return out


def published_inputs(corpora: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``{data-set name: sha256}`` of every published file the loader reads (for the manifest)."""
    names = [PROMPTS_DATASET]
    for corpus in corpora:
        names += list(published_score_files(corpus).values())
    return datasets.checksums(names)


# -- corpus labels ----------------------------------------------------------------------------------------

LABEL_COLUMNS = ["corpus", "word", "category", "subcategory"]


def labels_of(corpora_table: pd.DataFrame, corpora: Sequence[str] | None = None) -> pd.DataFrame:
    """``corpus, word, category, subcategory`` (one row per label) of the scored rows of a corpora table
    (the corpora stage's ``corpora.parquet``, or :func:`rmvalues.data.corpora.scorable` rows), optionally
    restricted to ``corpora``; a requested corpus the table lacks is a ``ValueError``."""
    df = corpora_table
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    if corpora is not None:
        missing = [c for c in corpora if c not in set(df["corpus"])]
        if missing:
            raise ValueError(
                f"the corpora table holds no {missing} (it holds {sorted(set(df['corpus']))}); run the corpora "
                "stage with these corpora"
            )
        df = df[df["corpus"].isin(list(corpora))]
    return df[LABEL_COLUMNS].drop_duplicates().reset_index(drop=True)


# -- loaders ----------------------------------------------------------------------------------------------


def empty_scores() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in SCORE_COLUMNS})


_DTYPES: dict[str, str] = {
    "model": "str",
    "revision": "str",
    "family": "str",
    "source": "str",
    "prompt_id": "str",
    "framing": "str",
    "corpus": "str",
    "category": "str",
    "subcategory": "str",
    "word": "str",
    "n_tokens": "Int64",
    "score": "float64",
}


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Columns of :data:`SCORE_COLUMNS` in order with their dtypes; raises ``ValueError`` if any is missing."""
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"scores table lacks column(s) {', '.join(missing)}; the long format has: {', '.join(SCORE_COLUMNS)}"
        )
    out = df[list(SCORE_COLUMNS)].copy()
    for col, dtype in _DTYPES.items():
        if str(out[col].dtype) != dtype:
            out[col] = out[col].astype(dtype)
    bad_source = sorted(set(out["source"].dropna().unique()) - set(SOURCES))
    if bad_source:
        raise ValueError(f"scores table: unknown source(s) {bad_source}; valid: {', '.join(SOURCES)}")
    bad_framing = sorted(set(out["framing"].dropna().unique()) - set(FRAMINGS))
    if bad_framing:
        raise ValueError(f"scores table: unknown framing(s) {bad_framing}; valid: {', '.join(FRAMINGS)}")
    if out["score"].isna().any():
        raise ValueError(f"scores table: {int(out['score'].isna().sum())} missing score(s)")
    return out


def load_published_scores(
    labels: pd.DataFrame,
    corpora: Sequence[str] = ("big2_nouns", "mfd2"),
    prompts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The paper's released scores of the ten RMs in the long format (:data:`SCORE_COLUMNS`).

    Words of a score file that are not in the corpus (two such words in the Big Two nouns files:
    ``discussion`` and ``eagerness``) are dropped, as the paper's inner join drops them; they are listed in
    ``df.attrs["unlabelled_words"]`` (``{corpus: [words]}``). ``labels``: ``corpus, word, category,
    subcategory`` of the corpora (:func:`labels_of` of the corpora stage's output). ``prompts`` selects
    prompt keys (``None`` or empty: all 54).
    """
    selected = select_prompts(prompts)
    rms = {rm.model: rm for rm in published_rms()}
    frames: list[pd.DataFrame] = []
    unlabelled: dict[str, list[str]] = {}
    for corpus in corpora:
        corpus_labels = labels_of(labels, [corpus])
        files = published_score_files(corpus)
        dropped: set[str] = set()
        for model, name in files.items():
            wide = pd.read_parquet(datasets.fetch(name))
            absent = sorted(set(selected) - set(wide.columns))
            if absent:
                raise ValueError(f"{name}: prompt column(s) {absent} missing")
            if wide["response"].duplicated().any():
                raise ValueError(
                    f"{name}: duplicated words {wide.loc[wide['response'].duplicated(), 'response'].tolist()}"
                )
            long = wide.melt(
                id_vars="response", value_vars=selected, var_name="prompt_id", value_name="score"
            )
            long = long.rename(columns={"response": "word"})
            dropped |= set(wide["response"]) - set(corpus_labels["word"])
            long = long.merge(corpus_labels[["word", "category", "subcategory"]], on="word", how="inner")
            rm = rms[model]
            long["model"] = model
            long["revision"] = rm.revision
            long["family"] = rm.family
            long["source"] = "published"
            long["corpus"] = corpus
            long["framing"] = long["prompt_id"].map({p: framing_of(p) for p in selected})
            long["n_tokens"] = pd.NA
            frames.append(long)
        unlabelled[corpus] = sorted(dropped)
    out = conform(pd.concat(frames, ignore_index=True)) if frames else empty_scores()
    out.attrs["unlabelled_words"] = unlabelled
    return out


def read_live_scores(
    path: str | os.PathLike[str],
    corpora: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Scores computed by the scoring stage (its ``scores.parquet``), optionally restricted to ``corpora``
    and ``prompts``; ``ValueError`` when nothing is left."""
    path = Path(path)
    df = conform(pd.read_parquet(path))
    if corpora:
        df = df[df["corpus"].isin(list(corpora))]
    if prompts:
        df = df[df["prompt_id"].isin(select_prompts(prompts))]
    if df.empty:
        raise ValueError(
            f"live scores at {path} hold nothing for corpora {list(corpora or [])} and the selected prompts; "
            f"they hold corpora {sorted(set(pd.read_parquet(path, columns=['corpus'])['corpus']))}"
        )
    return df.reset_index(drop=True)
