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
must rank each (model, prompt, corpus) on unique words (see :func:`rmvalues.statistics.rank_scores`).

The published scores are loaded through the data layer (:func:`rmvalues.data.fetch`), so the analysis runs
on any laptop. The mapping of published files to the ten RMs and their families is data:
``config/published_rms.yaml``.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from . import data, paths

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

#: The paper's prompt design: adjective (its framing) x frame x concision style = 54 prompts.
POSITIVE_ADJECTIVES: tuple[str, ...] = ("best", "greatest", "good")
NEGATIVE_ADJECTIVES: tuple[str, ...] = ("worst", "bad", "terrible")
FRAMES: tuple[str, ...] = ("ever", "world", "time")
STYLES: tuple[str, ...] = ("one", "single", "please")
FRAMINGS: tuple[str, ...] = ("positive", "negative")

#: Name of the data set holding the 54 prompts (YAML: key -> prompt text).
PROMPTS_DATASET = "paper/config/prompts"


def prompt_ids() -> list[str]:
    """The 54 prompt keys of the paper's design, in its order (no I/O)."""
    return [
        f"{adj}_{frame}_{style}"
        for adj, frame, style in itertools.product(POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES, FRAMES, STYLES)
    ]


def framing_of(prompt_id: str) -> str:
    """``positive`` or ``negative``, from the prompt key's adjective (its first ``_`` part)."""
    adjective = str(prompt_id).split("_", 1)[0]
    if adjective in POSITIVE_ADJECTIVES:
        return "positive"
    if adjective in NEGATIVE_ADJECTIVES:
        return "negative"
    raise ValueError(
        f"prompt {prompt_id!r}: unknown adjective {adjective!r}; prompt keys start with one of "
        f"{', '.join(POSITIVE_ADJECTIVES)} (positive) or {', '.join(NEGATIVE_ADJECTIVES)} (negative)"
    )


def load_prompts() -> pd.DataFrame:
    """The paper's prompts: ``prompt_id, text, adjective, frame, style, framing`` (54 rows).

    Raises :class:`ValueError` when the released file does not match the 6 x 3 x 3 design.
    """
    raw = yaml.safe_load(data.fetch(PROMPTS_DATASET).read_text(encoding="utf-8")) or {}
    expected = prompt_ids()
    if sorted(raw) != sorted(expected):
        missing = sorted(set(expected) - set(raw))
        extra = sorted(set(raw) - set(expected))
        raise ValueError(
            f"{PROMPTS_DATASET}: does not match the 54-prompt design (missing {missing}, extra {extra})"
        )
    rows = []
    for key in expected:
        adjective, frame, style = key.split("_")
        rows.append(
            {
                "prompt_id": key,
                "text": str(raw[key]),
                "adjective": adjective,
                "frame": frame,
                "style": style,
                "framing": framing_of(key),
            }
        )
    return pd.DataFrame(rows)


# -- the ten published RMs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedRM:
    model: str
    file: str
    family: str
    label: str
    revision: str | None = None


def published_rms_path() -> Path:
    return paths.config_dir() / "published_rms.yaml"


@lru_cache(maxsize=2)
def _published_config(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}


def published_rms() -> list[PublishedRM]:
    """The ten RMs of the paper's release with their base family (from ``config/published_rms.yaml``)."""
    return [PublishedRM(**entry) for entry in _published_config(str(published_rms_path()))["rms"]]


def published_rm_table() -> pd.DataFrame:
    """``model, file, family, label, revision`` of the published RMs."""
    return pd.DataFrame([rm.__dict__ for rm in published_rms()])


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
    for name in sorted(data.catalogue()):
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
    return data.checksums(names)


# -- corpus labels ----------------------------------------------------------------------------------------


def corpus_labels(corpus: str) -> pd.DataFrame:
    """``corpus, word, category, subcategory`` of every labelled word of ``corpus`` (one row per label).

    The scorable rows (``status == "ok"``) of :func:`rmvalues.corpora.load_corpus`.
    """
    from . import corpora

    df = corpora.scorable(corpora.load_corpus(corpus))
    return df[["corpus", "word", "category", "subcategory"]].drop_duplicates().reset_index(drop=True)


# -- loaders ----------------------------------------------------------------------------------------------


def _empty_scores() -> pd.DataFrame:
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
    corpora: list[str] | tuple[str, ...] = ("big2_nouns", "mfd2"),
    prompts: list[str] | tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """The paper's released scores of the ten RMs in the long format (:data:`SCORE_COLUMNS`).

    Words of a score file that are not in the corpus (two such words in the Big Two nouns files:
    ``discussion`` and ``eagerness``) are dropped, as the paper's inner join drops them; they are listed in
    ``df.attrs["unlabelled_words"]`` (``{corpus: [words]}``). ``prompts`` selects prompt keys (``None`` or
    empty: all 54).
    """
    selected = _check_prompts(prompts)
    rms = {rm.model: rm for rm in published_rms()}
    frames: list[pd.DataFrame] = []
    unlabelled: dict[str, list[str]] = {}
    for corpus in corpora:
        labels = corpus_labels(corpus)
        files = published_score_files(corpus)
        dropped: set[str] = set()
        for model, name in files.items():
            wide = pd.read_parquet(data.fetch(name))
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
            dropped |= set(wide["response"]) - set(labels["word"])
            long = long.merge(labels[["word", "category", "subcategory"]], on="word", how="inner")
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
    out = conform(pd.concat(frames, ignore_index=True)) if frames else _empty_scores()
    out.attrs["unlabelled_words"] = unlabelled
    return out


def live_scores_path(
    scoring_run: str = "default", results_root: str | os.PathLike[str] | None = None
) -> Path:
    root = paths.resolve(results_root) if results_root is not None else paths.results_root()
    return root / "scoring" / scoring_run / "scores.parquet"


def load_live_scores(
    scoring_run: str = "default",
    results_root: str | os.PathLike[str] | None = None,
    corpora: list[str] | tuple[str, ...] | None = None,
    prompts: list[str] | tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Scores computed by the scoring stage (``<results_root>/scoring/<scoring_run>/scores.parquet``).

    Raises ``FileNotFoundError`` saying to run the scoring stage first when the file is absent, and
    ``ValueError`` when nothing is left after selecting ``corpora`` and ``prompts``.
    """
    path = live_scores_path(scoring_run, results_root)
    if not path.is_file():
        raise FileNotFoundError(
            f"no live scores at {path}: run the scoring stage first (scoring run {scoring_run!r}), "
            f"or set scores='published' to analyse the paper's released scores"
        )
    df = conform(pd.read_parquet(path))
    if corpora:
        df = df[df["corpus"].isin(list(corpora))]
    selected = _check_prompts(prompts) if prompts else None
    if selected is not None:
        df = df[df["prompt_id"].isin(selected)]
    if df.empty:
        raise ValueError(
            f"live scores at {path} hold nothing for corpora {list(corpora or [])} and the selected prompts; "
            f"they hold corpora {sorted(set(pd.read_parquet(path, columns=['corpus'])['corpus']))}"
        )
    return df.reset_index(drop=True)


def load_scores(
    scores: str = "published",
    corpora: list[str] | tuple[str, ...] = ("big2_nouns", "mfd2"),
    prompts: list[str] | tuple[str, ...] | None = None,
    scoring_run: str = "default",
    results_root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Scores of ``scores`` = ``published``, ``live`` or ``both`` (concatenated) in the long format."""
    if scores not in ("published", "live", "both"):
        raise ValueError(f"scores={scores!r}; valid: 'published', 'live', 'both'")
    parts: list[pd.DataFrame] = []
    attrs: dict = {}
    if scores in ("published", "both"):
        pub = load_published_scores(corpora, prompts)
        attrs = dict(pub.attrs)
        parts.append(pub)
    if scores in ("live", "both"):
        parts.append(load_live_scores(scoring_run, results_root, corpora, prompts))
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    out.attrs = attrs
    return out


def _check_prompts(prompts: list[str] | tuple[str, ...] | None) -> list[str]:
    valid = prompt_ids()
    if not prompts:
        return valid
    unknown = [p for p in prompts if p not in valid]
    if unknown:
        raise ValueError(
            f"unknown prompt id(s) {unknown}; valid ids are adjective_frame_style with adjective in "
            f"{POSITIVE_ADJECTIVES + NEGATIVE_ADJECTIVES}, frame in {FRAMES}, style in {STYLES} "
            f"(e.g. 'greatest_ever_one'); an empty list selects all 54"
        )
    return [p for p in valid if p in set(prompts)]


#: Public names of the helpers other stages use (the scoring stage validates prompts and builds empty
#: tables with them).
select_prompts = _check_prompts
empty_scores = _empty_scores
