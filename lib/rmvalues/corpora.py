"""Corpora: the word lists the book scores, read into one long table, validated, and annotated with confounds.

**The corpus model.** Every corpus becomes a long :class:`pandas.DataFrame`, one row per (word, label) entry:

``corpus, word, category, subcategory, source, entry, stem, line, status``

* ``source`` says where the row came from: the file, its format, and how (``"dict_big2_nouns.csv (csv)"``,
  ``"... (dicx): wildcard-expanded from accept* (wordfreq en/large top 50000)"``);
* ``entry`` is ``"word"`` (a literal entry of the file), ``"stem"`` (a wildcard entry such as ``accept*``) or
  ``"expansion"`` (a word of the word list matched by a stem; ``stem`` names it);
* ``line`` is the entry's line in the file (1 = the header of a CSV), so every row can be traced back;
* ``status`` is ``"ok"`` for the rows that are scored, else why a row is not: ``"stem"`` (stems are not
  words), ``"duplicate"`` (same word and label earlier in the corpus) or ``"conflict-dropped"`` (the corpus'
  ``conflicts: drop`` policy). Nothing is ever removed silently: :func:`load_corpus` keeps every row and
  :func:`validation_issues` reports each finding.

Corpora are registered in ``config/corpora.yaml`` (one entry per corpus: file, format, columns, label rule,
declared categories, policies); :func:`list_corpora`, :func:`load_corpus`, :func:`load_corpora` read them.

**Validation** (:func:`validation_issues` and the tidy tables it is built from): duplicates, words under two
labels, empty or tiny categories, wildcard stems and their expansion counts, multi-word and non-ASCII entries.

**Confounds.** :func:`prepare_corpora` keeps the scorable rows and adds ``n_words``, ``is_ascii``,
``zipf_frequency`` (wordfreq) and the Warriner et al. (2013) norms ``valence, arousal, dominance`` (NaN where a
word is not normed); :func:`category_balance` compares categories on them with Cohen's d and a Mann-Whitney
test with its rank-biserial correlation; :func:`tokenize_words` / :func:`token_summary` count tokens per model
tokenizer, bare (``"word"``) and with a leading space (``" word"``).
"""

from __future__ import annotations

import bisect
import io
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from . import data, paths

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from transformers import PreTrainedTokenizerBase

#: Columns of the corpus model returned by :func:`load_corpus`.
COLUMNS = ["corpus", "word", "category", "subcategory", "source", "entry", "stem", "line", "status"]
#: Columns of an issue table (:func:`validation_issues`).
ISSUE_COLUMNS = ["corpus", "word", "check", "detail"]
#: Columns :func:`prepare_corpora` adds (later stages rely on these names).
ANNOTATION_COLUMNS = [
    "n_words",
    "is_ascii",
    "n_labels",
    "zipf_frequency",
    "valence",
    "arousal",
    "dominance",
]
FORMATS = ("csv", "dicx", "dic")
LABEL_RULES = ("column", "split")
CONFLICT_POLICIES = ("keep-both", "drop", "error")
WILDCARD_POLICIES = ("expand", "literal", "error")
#: Embedded offline models whose tokenizers the chapter uses by default.
DEFAULT_MODELS = ("gemma3-270m", "smollm2-135m-instruct")
NORMS_DATASET = "taters/warriner-norms"
#: Cell values of a dicx file that mean "not in this label"; MARKS mean "in this label".
EMPTY_CELLS = frozenset({"", "NA", "N/A", "NaN", "nan"})
MARKS = frozenset({"X", "x"})


class CorpusError(ValueError):
    """A corpus file or its configuration entry is invalid (raised with what is wrong and how to fix it)."""


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordList:
    """The word list wildcard stems are expanded against (``wordlist:`` in ``config/corpora.yaml``)."""

    source: str = "wordfreq"
    lang: str = "en"
    list: str = "large"
    size: int = 50000

    def describe(self) -> str:
        """E.g. ``"wordfreq 3.1.1 en/large top 50000"`` (written into the ``source`` of expanded words)."""
        import importlib.metadata

        return f"wordfreq {importlib.metadata.version('wordfreq')} {self.lang}/{self.list} top {self.size}"


@dataclass(frozen=True)
class CorpusSpec:
    """One entry of ``config/corpora.yaml`` (see the comments at the top of that file)."""

    name: str
    format: str
    categories: tuple[str, ...]
    dataset: str | None = None
    path: str | None = None
    description: str = ""
    word_column: str = "DicTerm"
    category_column: str | None = None
    subcategory_column: str | None = None
    label_rule: str = "column"
    separator: str = "_"
    subcategory: str | None = None
    category_map: Mapping[str, str] = field(default_factory=dict)
    subcategory_map: Mapping[str, str] = field(default_factory=dict)
    subcategories: tuple[str, ...] | None = None
    conflicts: str = "keep-both"
    wildcards: str = "expand"
    encoding: str = "utf-8"

    def file(self) -> Path:
        """Local path of the corpus file (fetched and checked through the data layer for ``dataset:``)."""
        if self.dataset:
            return data.fetch(self.dataset)
        assert self.path is not None
        p = paths.resolve(self.path)
        if not p.is_file():
            raise CorpusError(
                f"corpus {self.name!r}: file {p} does not exist (config path: {self.path!r}, relative to the "
                f"project root {paths.project_root()}). Fix the path in config/corpora.yaml."
            )
        return p

    def sha256(self) -> str:
        """sha256 of the corpus file, for manifests."""
        if self.dataset:
            return data.get(self.dataset).sha256
        return data.sha256_file(self.file())

    @property
    def input_name(self) -> str:
        """Name under which the file is recorded as a manifest input."""
        return self.dataset or f"path:{self.path}"


_SPEC_KEYS = {f for f in CorpusSpec.__dataclass_fields__ if f != "name"}


def config_path() -> Path:
    return paths.config_dir() / "corpora.yaml"


def _load_config(path: Path | None) -> dict[str, Any]:
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        raise CorpusError(f"corpus configuration {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("corpora"), dict):
        raise CorpusError(f"{path}: expected a mapping with a 'corpora:' mapping of corpus entries")
    return raw


def _spec_from_entry(name: str, entry: Mapping[str, Any], where: Path) -> CorpusSpec:
    if not isinstance(entry, Mapping):
        raise CorpusError(f"{where}: corpus {name!r} must be a mapping of settings")
    unknown = set(entry) - _SPEC_KEYS
    if unknown:
        raise CorpusError(
            f"{where}: corpus {name!r} has unknown setting(s) {', '.join(sorted(unknown))}. "
            f"Valid settings: {', '.join(sorted(_SPEC_KEYS))}"
        )
    if bool(entry.get("dataset")) == bool(entry.get("path")):
        raise CorpusError(
            f"{where}: corpus {name!r} must name exactly one of 'dataset:' (a data set of config/datasets.yaml) "
            f"or 'path:' (a file relative to the project root)"
        )
    fmt = entry.get("format")
    if fmt not in FORMATS:
        raise CorpusError(f"{where}: corpus {name!r} has format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    cats = entry.get("categories")
    if not cats or not isinstance(cats, list | tuple):
        raise CorpusError(
            f"{where}: corpus {name!r} must declare its valid categories, e.g. 'categories: [Agency, Communion]' "
            f"(they guard against typos in the file)"
        )
    for key, valid in (
        ("label_rule", LABEL_RULES),
        ("conflicts", CONFLICT_POLICIES),
        ("wildcards", WILDCARD_POLICIES),
    ):
        if key in entry and entry[key] not in valid:
            raise CorpusError(
                f"{where}: corpus {name!r} has {key}: {entry[key]!r}; valid values: {', '.join(valid)}"
            )
    if fmt == "csv" and not entry.get("category_column"):
        raise CorpusError(f"{where}: corpus {name!r} (format csv) needs 'category_column:'")
    kwargs = dict(entry)
    kwargs["categories"] = tuple(str(c) for c in cats)
    if kwargs.get("subcategories") is not None:
        kwargs["subcategories"] = tuple(str(c) for c in kwargs["subcategories"])
    for key in ("category_map", "subcategory_map"):
        kwargs[key] = {str(k): str(v) for k, v in (kwargs.get(key) or {}).items()}
    if "word_column" not in kwargs and fmt == "csv":
        raise CorpusError(f"{where}: corpus {name!r} (format csv) needs 'word_column:'")
    return CorpusSpec(name=name, **kwargs)


def registry(path: str | os.PathLike[str] | None = None) -> dict[str, CorpusSpec]:
    """All registered corpora by name (``config/corpora.yaml`` unless ``path`` names another file)."""
    where = Path(path) if path is not None else config_path()
    raw = _load_config(where)
    return {str(name): _spec_from_entry(str(name), entry, where) for name, entry in raw["corpora"].items()}


def wordlist_config(path: str | os.PathLike[str] | None = None) -> WordList:
    """The ``wordlist:`` settings of ``config/corpora.yaml``."""
    where = Path(path) if path is not None else config_path()
    raw = _load_config(where).get("wordlist") or {}
    unknown = set(raw) - set(WordList.__dataclass_fields__)
    if unknown:
        raise CorpusError(f"{where}: unknown wordlist setting(s) {', '.join(sorted(unknown))}")
    wl = WordList(**raw)
    if wl.source != "wordfreq":
        raise CorpusError(f"{where}: wordlist source {wl.source!r} is not supported; use 'wordfreq'")
    return wl


def list_corpora(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the registered corpora, in configuration order."""
    return list(registry(path))


def get_spec(name: str, path: str | os.PathLike[str] | None = None) -> CorpusSpec:
    reg = registry(path)
    if name not in reg:
        raise CorpusError(
            f"unknown corpus {name!r}. Valid corpora: {', '.join(reg)}. "
            f"Register new ones in {Path(path) if path else config_path()}."
        )
    return reg[name]


# ---------------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------------


def read_text(file: Path, encoding: str = "utf-8") -> str:
    """Decode ``file``; a file that is not valid in ``encoding`` raises :class:`CorpusError` saying where."""
    raw = Path(file).read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusError(
            f"{file} is not valid {encoding}: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}) "
            f"cannot be decoded. Re-encode the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`) "
            f"or declare its encoding in the corpus' config entry (e.g. 'encoding: latin-1')."
        ) from exc
    except LookupError as exc:
        raise CorpusError(f"{file}: unknown encoding {encoding!r} in the corpus configuration") from exc
    if not text.strip():
        raise CorpusError(f"{file} is empty: a corpus file needs a header and at least one entry")
    return text


def _read_table(text: str, file: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise CorpusError(f"{file} is empty: a corpus file needs a header and at least one entry") from exc
    except pd.errors.ParserError as exc:
        raise CorpusError(f"{file} is not a valid CSV file: {exc}") from exc
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise CorpusError(f"{file} has a header ({', '.join(table.columns)}) but no entries")
    return table


def _require_columns(table: pd.DataFrame, columns: Iterable[str], file: Path, spec: CorpusSpec) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CorpusError(
            f"{file} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(table.columns)}). "
            f"Fix the column names in the file or in the config entry of corpus {spec.name!r} "
            f"(word_column / category_column / subcategory_column)."
        )


def _read_csv(text: str, file: Path, spec: CorpusSpec) -> list[tuple[str, str, str | None, int]]:
    table = _read_table(text, file)
    cols = [spec.word_column, spec.category_column] + (
        [spec.subcategory_column] if spec.subcategory_column else []
    )
    _require_columns(table, [c for c in cols if c], file, spec)
    words = table[spec.word_column].tolist()
    labels = table[spec.category_column].tolist()
    subs = table[spec.subcategory_column].tolist() if spec.subcategory_column else [None] * len(words)
    return [(w, c, s, i) for i, (w, c, s) in enumerate(zip(words, labels, subs, strict=True), start=2)]


def _read_dicx(text: str, file: Path, spec: CorpusSpec) -> list[tuple[str, str, str | None, int]]:
    table = _read_table(text, file)
    _require_columns(table, [spec.word_column], file, spec)
    labels = [c for c in table.columns if c != spec.word_column]
    if not labels:
        raise CorpusError(f"{file} has no label columns besides {spec.word_column!r}")
    out = []
    words = table[spec.word_column].tolist()
    for label in labels:
        cells = table[label].str.strip()
        bad = ~cells.isin(EMPTY_CELLS | MARKS)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise CorpusError(
                f"{file}, line {i + 2}, column {label!r}: unexpected value {table[label].iloc[i]!r}. "
                f"A dicx cell is either a mark (X) or empty/NA."
            )
    for i, word in enumerate(words):
        for label in labels:
            if table[label].iloc[i].strip() in MARKS:
                out.append((word, label, None, i + 2))
    return out


def _read_dic(text: str, file: Path, spec: CorpusSpec) -> list[tuple[str, str, str | None, int]]:
    lines = text.splitlines()
    marks = [i for i, ln in enumerate(lines) if ln.strip() == "%"]
    if len(marks) < 2:
        raise CorpusError(
            f"{file}: a LIWC .dic file starts with a header block between two '%' lines "
            f"('%', then '<id><TAB><category>' lines, then '%'); found {len(marks)} '%' line(s)"
        )
    start, end = marks[0], marks[1]
    ids: dict[str, str] = {}
    for n in range(start + 1, end):
        ln = lines[n].strip()
        if not ln:
            continue
        parts = ln.split(None, 1)
        if len(parts) != 2:
            raise CorpusError(f"{file}, line {n + 1}: header line {lines[n]!r} is not '<id><TAB><category>'")
        ids[parts[0]] = parts[1].strip()
    out = []
    for n in range(end + 1, len(lines)):
        ln = lines[n]
        if not ln.strip():
            continue
        if "\t" in ln:
            word, _, rest = ln.partition("\t")
            codes = rest.split()
        else:  # space separated: trailing numeric fields are ids, the rest is the (multi-word) entry
            fields = ln.split()
            k = len(fields)
            while k > 1 and fields[k - 1] in ids:
                k -= 1
            word, codes = " ".join(fields[:k]), fields[k:]
        word = word.strip()
        if not codes:
            raise CorpusError(f"{file}, line {n + 1}: entry {word!r} has no category ids")
        for code in codes:
            if code not in ids:
                raise CorpusError(
                    f"{file}, line {n + 1}: entry {word!r} uses category id {code!r}, which the header does not "
                    f"define (defined ids: {', '.join(ids)})"
                )
            out.append((word, ids[code], None, n + 1))
    if not out:
        raise CorpusError(f"{file} has a header but no entries")
    return out


_READERS = {"csv": _read_csv, "dicx": _read_dicx, "dic": _read_dic}


def _labels(records: list[tuple[str, str, str | None, int]], spec: CorpusSpec, file: Path) -> pd.DataFrame:
    rows = []
    for word, label, sub, line in records:
        label = label.strip()
        if spec.format != "csv" and spec.label_rule == "split":
            if spec.separator not in label:
                raise CorpusError(
                    f"{file}: label {label!r} has no separator {spec.separator!r}; corpus {spec.name!r} uses "
                    f"label_rule: split (e.g. Care{spec.separator}Virtue). Fix the label or the config entry."
                )
            label, sub = label.split(spec.separator, 1)
        elif sub is None:
            sub = spec.subcategory
        category = spec.category_map.get(label, label)
        if sub is not None:
            sub = sub.strip()
            sub = spec.subcategory_map.get(sub, sub) or None
        rows.append((word.strip(), category, sub, line))
    df = pd.DataFrame(rows, columns=["word", "category", "subcategory", "line"])
    empty = df["word"] == ""
    if empty.any():
        raise CorpusError(
            f"{file}, line {int(df.loc[empty, 'line'].iloc[0])}: empty word. Remove the row or fill in the word."
        )
    _check_declared(df, "category", spec.categories, spec, file)
    if spec.subcategories is not None:
        _check_declared(df, "subcategory", spec.subcategories, spec, file)
    return df


def _check_declared(
    df: pd.DataFrame, column: str, valid: Sequence[str], spec: CorpusSpec, file: Path
) -> None:
    values = df[column].dropna()
    bad = values[~values.isin(valid)]
    if bad.empty:
        return
    examples = []
    for value in pd.unique(bad):
        hit = df[df[column] == value].iloc[0]
        examples.append(f"{value!r} (e.g. {hit['word']!r}, line {hit['line']})")
    raise CorpusError(
        f"{file}: unknown {column} {', '.join(examples)} in corpus {spec.name!r}. Valid {column}s: "
        f"{', '.join(valid)}. Fix the typo in the file, or declare the {column} in config/corpora.yaml "
        f"({'categories' if column == 'category' else 'subcategories'}: or {column}_map:)."
    )


# ---------------------------------------------------------------------------------------------------------
# Wildcards
# ---------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _wordlist_words(
    lang: str, name: str, size: int
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    import wordfreq

    words = wordfreq.top_n_list(lang, size, wordlist=name)
    order = sorted(range(len(words)), key=words.__getitem__)
    return tuple(words), tuple(words[i] for i in order), tuple(order)


def wordlist_words(wordlist: WordList | None = None) -> list[str]:
    """The words of the expansion word list, most frequent first."""
    wl = wordlist or wordlist_config()
    return list(_wordlist_words(wl.lang, wl.list, int(wl.size))[0])


def is_wildcard(word: str) -> bool:
    return word.endswith("*")


def expand_stem(stem: str, words: Sequence[str]) -> list[str]:
    """Words of ``words`` that start with ``stem`` (without its trailing ``*``), in the order of ``words``.

    Matching is case-insensitive (the stem is lower-cased; wordfreq's lists are lower-case). A stem that
    contains a space or a hyphen can only match list entries that contain one too, so against wordfreq's
    single-token lists it has no expansions (reported by :func:`stem_expansions`).
    """
    if not is_wildcard(stem) or "*" in stem[:-1]:
        raise CorpusError(f"wildcard entry {stem!r}: only one '*' at the end of an entry is supported")
    prefix = stem[:-1].lower()
    if not prefix:
        raise CorpusError("wildcard entry '*' matches every word; remove it")
    return [w for w in words if w.startswith(prefix)]


def _expand_fast(prefix: str, sorted_words: Sequence[str], order: Sequence[int]) -> list[int]:
    lo = bisect.bisect_left(sorted_words, prefix)
    hi = bisect.bisect_left(sorted_words, prefix + "\U0010ffff")
    return sorted(order[lo:hi])


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def read_corpus_file(
    file: str | os.PathLike[str],
    spec: CorpusSpec,
    *,
    wordlist: WordList | None = None,
    words: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read one corpus file into the corpus model (see the module doc) following ``spec``.

    ``words`` (a word list, most frequent first) replaces the configured word list for wildcard expansion;
    tests pass a small hand-made list.
    """
    file = Path(file)
    text = read_text(file, spec.encoding)
    records = _READERS[spec.format](text, file, spec)
    df = _labels(records, spec, file)
    base = f"{file.name} ({spec.format})"
    df["source"] = base
    df["entry"] = "word"
    df["stem"] = None
    wild = df["word"].map(is_wildcard)
    if wild.any() and spec.wildcards == "error":
        first = df[wild].iloc[0]
        raise CorpusError(
            f"{file}, line {first['line']}: wildcard entry {first['word']!r}, but corpus {spec.name!r} has "
            f"wildcards: error. Expand it by hand or set wildcards: expand."
        )
    if wild.any() and spec.wildcards == "expand":
        if words is None:
            wl = wordlist or wordlist_config()
            listed, sorted_words, order = _wordlist_words(wl.lang, wl.list, int(wl.size))
            how = wl.describe()
        else:
            listed = tuple(words)
            order = tuple(sorted(range(len(listed)), key=listed.__getitem__))
            sorted_words = tuple(listed[i] for i in order)
            how = f"given word list of {len(listed)} words"
        pieces = []
        for _, row in df.iterrows():
            if not is_wildcard(row["word"]):
                pieces.append(row.to_dict())
                continue
            stem = row["word"]
            expand_stem(stem, ())  # validates the pattern
            hits = [listed[i] for i in _expand_fast(stem[:-1].lower(), sorted_words, order)]
            pieces.append(
                {
                    **row.to_dict(),
                    "entry": "stem",
                    "stem": stem,
                    "source": f"{base}: wildcard stem, {len(hits)} expansions ({how})",
                }
            )
            for w in hits:
                pieces.append(
                    {
                        **row.to_dict(),
                        "word": w,
                        "entry": "expansion",
                        "stem": stem,
                        "source": f"{base}: wildcard-expanded from {stem} ({how})",
                    }
                )
        df = pd.DataFrame(pieces)
    df.insert(0, "corpus", spec.name)
    df["status"] = np.where(df["entry"] == "stem", "stem", "ok")
    df = _mark_duplicates_and_conflicts(df, spec, file)
    return df[COLUMNS].reset_index(drop=True)


def _mark_duplicates_and_conflicts(df: pd.DataFrame, spec: CorpusSpec, file: Path) -> pd.DataFrame:
    df = df.copy()
    live = df["status"] == "ok"
    # literal entries win over expansions of the same word and label
    prio = (df["entry"] != "word").astype(int)
    keyed = df.assign(_sub=df["subcategory"].fillna("\0"), _prio=prio, _pos=np.arange(len(df)))
    keyed = keyed[live].sort_values(["_prio", "_pos"], kind="stable")
    dup = keyed.duplicated(["word", "category", "_sub"], keep="first")
    df.loc[dup[dup].index, "status"] = "duplicate"
    live = df["status"] == "ok"
    labels = df[live].assign(_sub=df["subcategory"].fillna("")).groupby("word")[["category", "_sub"]]
    n_labels = labels.apply(lambda g: len(set(zip(g["category"], g["_sub"], strict=True))))
    conflicted = n_labels[n_labels > 1].index
    if len(conflicted) and spec.conflicts == "error":
        examples = []
        for w in list(conflicted)[:10]:
            rows = df[live & (df["word"] == w)]
            where = ", ".join(f"{_label(r)} (line {r['line']})" for _, r in rows.iterrows())
            examples.append(f"{w!r}: {where}")
        raise CorpusError(
            f"{file}: {len(conflicted)} word(s) of corpus {spec.name!r} are listed under two labels, and the "
            f"corpus has conflicts: error. {'; '.join(examples)}. Fix the file, or set conflicts: keep-both "
            f"(score the word under each label) or conflicts: drop (score it under none)."
        )
    if len(conflicted) and spec.conflicts == "drop":
        df.loc[live & df["word"].isin(conflicted), "status"] = "conflict-dropped"
    return df


def _label(row: Mapping[str, Any]) -> str:
    sub = row.get("subcategory")
    return f"{row['category']}/{sub}" if isinstance(sub, str) else str(row["category"])


def load_corpus(
    name: str,
    *,
    wordlist_size: int | None = None,
    config: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """The corpus model of registered corpus ``name`` (every row of the file, plus wildcard expansions).

    ``wordlist_size`` overrides the configured size of the expansion word list. Use :func:`scorable` or
    :func:`prepare_corpora` for the rows that are scored.
    """
    spec = get_spec(name, config)
    wl = wordlist_config(config)
    if wordlist_size is not None:
        wl = WordList(source=wl.source, lang=wl.lang, list=wl.list, size=int(wordlist_size))
    return read_corpus_file(spec.file(), spec, wordlist=wl)


def load_corpora(
    names: Iterable[str],
    *,
    wordlist_size: int | None = None,
    config: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Several corpora stacked into one corpus-model table."""
    frames = [load_corpus(n, wordlist_size=wordlist_size, config=config) for n in names]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


def scorable(corpus: pd.DataFrame) -> pd.DataFrame:
    """The rows that are scored (``status == "ok"``): one per (corpus, word, category, subcategory)."""
    return corpus[corpus["status"] == "ok"].reset_index(drop=True)


def input_checksums(names: Iterable[str], config: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{input name: sha256}`` of the corpus files (for ``RunRecord.add_input``)."""
    reg = registry(config)
    return {reg[n].input_name: reg[n].sha256() for n in names}


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def find_duplicates(corpus: pd.DataFrame) -> pd.DataFrame:
    """Rows repeating an earlier (word, category, subcategory) of the same corpus, with the kept row's line."""
    dups = corpus[corpus["status"] == "duplicate"]
    kept = corpus[corpus["status"] != "duplicate"].assign(_sub=lambda d: d["subcategory"].fillna(""))
    kept = kept[kept["entry"] != "stem"].drop_duplicates(["corpus", "word", "category", "_sub"])
    merged = dups.assign(_sub=dups["subcategory"].fillna("")).merge(
        kept[["corpus", "word", "category", "_sub", "line", "source"]],
        on=["corpus", "word", "category", "_sub"],
        how="left",
        suffixes=("", "_kept"),
    )
    return merged[
        ["corpus", "word", "category", "subcategory", "line", "source", "line_kept", "source_kept"]
    ].reset_index(drop=True)


def find_cross_category(corpus: pd.DataFrame) -> pd.DataFrame:
    """Words listed under more than one (category, subcategory) label in a corpus, one row per word."""
    live = corpus[corpus["status"].isin(["ok", "conflict-dropped"])].copy()
    live["label"] = [_label(r) for r in live[["category", "subcategory"]].to_dict("records")]
    g = live.groupby(["corpus", "word"], sort=True)
    out = g.agg(
        n_labels=("label", "nunique"),
        labels=("label", lambda s: ", ".join(sorted(set(s)))),
        lines=("line", lambda s: ", ".join(str(x) for x in sorted(set(s)))),
        status=("status", lambda s: ", ".join(sorted(set(s)))),
    ).reset_index()
    return out[out["n_labels"] > 1].reset_index(drop=True)


def category_sizes(
    corpus: pd.DataFrame,
    *,
    threshold: int = 10,
    declared: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Scorable words per (corpus, category, subcategory), flagging empty and tiny (< ``threshold``) cells.

    ``declared`` maps corpus names to their valid categories (default: the registry's ``categories:``), so a
    declared category without any word shows up with ``n_words = 0``.
    """
    live = scorable(corpus)
    sizes = (
        live.assign(subcategory=live["subcategory"].fillna(""))
        .groupby(["corpus", "category", "subcategory"])
        .agg(n_words=("word", "nunique"))
        .reset_index()
    )
    if declared is None:
        try:
            reg = registry()
        except CorpusError:
            reg = {}
        declared = {c: reg[c].categories for c in corpus["corpus"].unique() if c in reg}
    missing = [
        {"corpus": c, "category": cat, "subcategory": "", "n_words": 0}
        for c, cats in declared.items()
        for cat in cats
        if not ((sizes["corpus"] == c) & (sizes["category"] == cat)).any()
    ]
    if missing:
        sizes = pd.concat([sizes, pd.DataFrame(missing)], ignore_index=True)
    sizes["subcategory"] = sizes["subcategory"].replace("", None)
    sizes["empty"] = sizes["n_words"] == 0
    sizes["tiny"] = (sizes["n_words"] > 0) & (sizes["n_words"] < threshold)
    return sizes.sort_values(["corpus", "category", "subcategory"], na_position="first").reset_index(
        drop=True
    )


def stem_expansions(corpus: pd.DataFrame, examples: int = 5) -> pd.DataFrame:
    """Each wildcard stem with its number of expansions (and of those that are scored) and a few examples."""
    stems = corpus[corpus["entry"] == "stem"]
    exp = corpus[corpus["entry"] == "expansion"]
    rows = []
    for _, s in stems.iterrows():
        mine = exp[(exp["corpus"] == s["corpus"]) & (exp["stem"] == s["stem"]) & (exp["line"] == s["line"])]
        mine = mine[
            (mine["category"] == s["category"]) & (mine["subcategory"].fillna("") == (s["subcategory"] or ""))
        ]
        rows.append(
            {
                "corpus": s["corpus"],
                "stem": s["stem"],
                "category": s["category"],
                "subcategory": s["subcategory"],
                "line": s["line"],
                "n_expansions": len(mine),
                "n_scored": int((mine["status"] == "ok").sum()),
                "examples": ", ".join(mine["word"].head(examples)),
            }
        )
    cols = ["corpus", "stem", "category", "subcategory", "line", "n_expansions", "n_scored", "examples"]
    return pd.DataFrame(rows, columns=cols)


def n_words_in(word: str) -> int:
    """Number of whitespace-separated words in an entry (``"common good"`` -> 2; hyphenated words count 1)."""
    return len(word.split())


def find_multiword(corpus: pd.DataFrame) -> pd.DataFrame:
    """Entries of more than one whitespace-separated word."""
    rows = corpus[corpus["entry"] != "stem"]
    n = rows["word"].map(n_words_in)
    out = rows.loc[n > 1, ["corpus", "word", "category", "subcategory", "line"]].copy()
    out["n_words"] = n[n > 1]
    return out.drop_duplicates(["corpus", "word"]).reset_index(drop=True)


def non_ascii_chars(word: str) -> str:
    """The non-ASCII characters of ``word`` with code points (empty if none)."""
    return ", ".join(
        f"{ch!r} U+{ord(ch):04X} {unicodedata.name(ch, '?')}" for ch in dict.fromkeys(word) if ord(ch) > 127
    )


def find_non_ascii(corpus: pd.DataFrame) -> pd.DataFrame:
    """Entries containing non-ASCII characters (e.g. curly apostrophes or accents)."""
    rows = corpus.drop_duplicates(["corpus", "word"])
    mask = ~rows["word"].map(str.isascii)
    out = rows.loc[mask, ["corpus", "word", "category", "subcategory", "line"]].copy()
    out["characters"] = out["word"].map(non_ascii_chars)
    return out.reset_index(drop=True)


def validation_issues(
    corpus: pd.DataFrame,
    *,
    tiny_category_threshold: int = 10,
    declared: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """All findings as issue rows ``corpus, word, check, detail`` (the content of ``validation.parquet``).

    Checks: ``duplicate``, ``two_categories``, ``empty_category``, ``tiny_category``, ``wildcard_stem``,
    ``stem_without_expansions``, ``multi_word``, ``non_ascii``. Category-level rows have ``word`` = None.
    """
    rows: list[dict[str, Any]] = []
    for _, r in find_duplicates(corpus).iterrows():
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["word"],
                "check": "duplicate",
                "detail": f"{_label(r)} again on line {r['line']} ({r['source']}); kept line {r['line_kept']}",
            }
        )
    for _, r in find_cross_category(corpus).iterrows():
        handled = (
            "dropped from every label (conflicts: drop)"
            if "conflict-dropped" in r["status"]
            else "kept under each label (conflicts: keep-both)"
        )
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["word"],
                "check": "two_categories",
                "detail": f"labels {r['labels']} (lines {r['lines']}); {handled}",
            }
        )
    for _, r in category_sizes(corpus, threshold=tiny_category_threshold, declared=declared).iterrows():
        if r["empty"] or r["tiny"]:
            rows.append(
                {
                    "corpus": r["corpus"],
                    "word": None,
                    "check": "empty_category" if r["empty"] else "tiny_category",
                    "detail": f"{_label(r)}: {r['n_words']} words (threshold {tiny_category_threshold})",
                }
            )
    for _, r in stem_expansions(corpus).iterrows():
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["stem"],
                "check": "wildcard_stem" if r["n_expansions"] else "stem_without_expansions",
                "detail": f"{_label(r)}: {r['n_expansions']} expansions ({r['n_scored']} scored)"
                + (f", e.g. {r['examples']}" if r["examples"] else "; the stem contributes no word"),
            }
        )
    for _, r in find_multiword(corpus).iterrows():
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["word"],
                "check": "multi_word",
                "detail": f"{r['n_words']} words",
            }
        )
    for _, r in find_non_ascii(corpus).iterrows():
        rows.append(
            {"corpus": r["corpus"], "word": r["word"], "check": "non_ascii", "detail": r["characters"]}
        )
    return pd.DataFrame(rows, columns=ISSUE_COLUMNS)


def issue_counts(issues: pd.DataFrame) -> pd.DataFrame:
    """Issue counts per corpus and check (a wide table for display)."""
    if issues.empty:
        return pd.DataFrame()
    return issues.pivot_table(index="corpus", columns="check", values="detail", aggfunc="size", fill_value=0)


def corpus_summary(corpus: pd.DataFrame) -> pd.DataFrame:
    """Counts per corpus and label: rows in the file, stems, expansions, duplicates, scored words."""
    df = corpus.assign(subcategory=corpus["subcategory"].fillna(""))
    g = df.groupby(["corpus", "category", "subcategory"])
    out = g.agg(
        file_entries=("entry", lambda s: int((s != "expansion").sum())),
        stems=("entry", lambda s: int((s == "stem").sum())),
        expansions=("entry", lambda s: int((s == "expansion").sum())),
        duplicates=("status", lambda s: int((s == "duplicate").sum())),
        conflict_dropped=("status", lambda s: int((s == "conflict-dropped").sum())),
        scored_words=("status", lambda s: int((s == "ok").sum())),
    ).reset_index()
    out["subcategory"] = out["subcategory"].replace("", None)
    return out


# ---------------------------------------------------------------------------------------------------------
# Frequency and norms
# ---------------------------------------------------------------------------------------------------------


def load_norms() -> pd.DataFrame:
    """Warriner, Kuperman & Brysbaert (2013) affective norms: ``word, valence, arousal, dominance``."""
    file = data.fetch(NORMS_DATASET)
    norms = pd.read_csv(file, keep_default_na=False, na_values=[""], dtype={"DicTerm": str})
    missing = {"DicTerm", "Valence", "Arousal", "Dominance"} - set(norms.columns)
    if missing:
        raise CorpusError(f"{file}: norms file lacks column(s) {', '.join(sorted(missing))}")
    norms = norms.rename(
        columns={"DicTerm": "word", "Valence": "valence", "Arousal": "arousal", "Dominance": "dominance"}
    )
    norms["word"] = norms["word"].str.strip().str.lower()
    return norms[["word", "valence", "arousal", "dominance"]].drop_duplicates("word").reset_index(drop=True)


def zipf_frequencies(words: Iterable[str], lang: str = "en") -> pd.Series:
    """wordfreq Zipf frequency of each word (0.0 = not in wordfreq's list; multi-word entries are combined
    by wordfreq from their tokens)."""
    import wordfreq

    words = list(words)
    return pd.Series([wordfreq.zipf_frequency(w, lang) for w in words], index=words, dtype=float)


def prepare_corpora(
    corpus: pd.DataFrame, norms: pd.DataFrame | None = None, lang: str = "en"
) -> pd.DataFrame:
    """The table ``corpora.parquet`` holds: scorable rows, annotated.

    Adds ``n_words`` (words in the entry), ``is_ascii``, ``n_labels`` (labels the word has in its corpus; >1
    for words kept under two categories), ``zipf_frequency`` (wordfreq) and ``valence, arousal, dominance``
    (Warriner norms matched on the lower-cased word; NaN where not normed). ``norms`` defaults to
    :func:`load_norms`.
    """
    out = scorable(corpus).drop(columns=["status"])
    out["n_words"] = out["word"].map(n_words_in).astype("int64")
    out["is_ascii"] = out["word"].map(str.isascii).astype(bool)
    lab = out.assign(_lab=out["category"] + "/" + out["subcategory"].fillna(""))
    out["n_labels"] = lab.groupby(["corpus", "word"])["_lab"].transform("nunique").astype("int64")
    freq = zipf_frequencies(pd.unique(out["word"]), lang)
    out["zipf_frequency"] = out["word"].map(freq).astype(float)
    norms = load_norms() if norms is None else norms
    key = out["word"].str.lower()
    normed = norms.set_index("word")
    for col in ("valence", "arousal", "dominance"):
        out[col] = key.map(normed[col]).astype(float)
    return out


def norm_coverage(corpora: pd.DataFrame) -> pd.DataFrame:
    """Per corpus and category: words, words with Warriner norms, share covered, words wordfreq lacks."""
    df = corpora.assign(subcategory=corpora["subcategory"].fillna(""))
    g = df.groupby(["corpus", "category", "subcategory"])
    out = g.agg(
        n_words=("word", "size"),
        n_valence=("valence", "count"),
        n_zero_frequency=("zipf_frequency", lambda s: int((s == 0).sum())),
    ).reset_index()
    out["valence_coverage"] = out["n_valence"] / out["n_words"]
    out["subcategory"] = out["subcategory"].replace("", None)
    return out


# ---------------------------------------------------------------------------------------------------------
# Category balance (the frequency and valence confounds)
# ---------------------------------------------------------------------------------------------------------


def compare_groups(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Two independent samples (NaN dropped): sizes, means, medians, Cohen's d, Hedges' g (NaN when either
    group has fewer than 2 values or both have zero variance), Mann-Whitney U (for ``x``), its two-sided p and
    the rank-biserial correlation (positive: ``x`` tends to be larger)."""
    import pingouin as pg

    x = np.asarray(pd.Series(x, dtype=float).dropna())
    y = np.asarray(pd.Series(y, dtype=float).dropna())
    out: dict[str, float] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(np.mean(x)) if len(x) else np.nan,
        "mean_b": float(np.mean(y)) if len(y) else np.nan,
        "median_a": float(np.median(x)) if len(x) else np.nan,
        "median_b": float(np.median(y)) if len(y) else np.nan,
        "cohen_d": np.nan,
        "hedges_g": np.nan,
        "mwu_u": np.nan,
        "p_value": np.nan,
        "rank_biserial": np.nan,
    }
    # d needs 2+ values per group and a pooled sd > 0
    if len(x) >= 2 and len(y) >= 2 and np.var(x, ddof=1) + np.var(y, ddof=1) > 0:
        out["cohen_d"] = float(pg.compute_effsize(x, y, paired=False, eftype="cohen"))
        out["hedges_g"] = float(pg.compute_effsize(x, y, paired=False, eftype="hedges"))
    if len(x) >= 1 and len(y) >= 1:
        res = pg.mwu(x, y, alternative="two-sided")
        out["mwu_u"] = float(res["U_val"].iloc[0])
        out["p_value"] = float(res["p_val"].iloc[0])
        out["rank_biserial"] = float(res["RBC"].iloc[0])
    return out


def category_balance(
    corpora: pd.DataFrame,
    variables: Sequence[str] = ("zipf_frequency", "valence"),
    *,
    group: str = "category",
    within: str | None = None,
) -> pd.DataFrame:
    """Compare the groups of each corpus on each variable.

    With two groups (Agency vs Communion) one row compares them; with more (the five moral foundations) each
    group is compared with the rest of its corpus (``group_b = "rest"``). ``within`` repeats the comparison
    inside each value of another column, e.g. ``group="subcategory", within="category"`` compares virtue with
    vice words inside each foundation. Columns: ``corpus, [within], variable, group_a, group_b`` and the
    statistics of :func:`compare_groups`.
    """
    rows = []
    split_cols = ["corpus"] + ([within] if within else [])
    for keys, part in corpora.groupby(split_cols, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        levels = sorted(part[group].dropna().unique())
        if len(levels) < 2:
            continue
        pairs = [(levels[0], levels[1])] if len(levels) == 2 else [(lv, "rest") for lv in levels]
        for var in variables:
            for a, b in pairs:
                xa = part.loc[part[group] == a, var]
                xb = part.loc[part[group] != a, var] if b == "rest" else part.loc[part[group] == b, var]
                rows.append(
                    {
                        **dict(zip(split_cols, keys, strict=True)),
                        "variable": var,
                        "group_a": a,
                        "group_b": b,
                        **compare_groups(xa, xb),
                    }
                )
    return pd.DataFrame(rows)


def subcategory_mix(corpora: pd.DataFrame, variable: str = "valence") -> pd.DataFrame:
    """Per corpus and category: the share of each subcategory and the mean of ``variable`` per subcategory and
    pooled. Shows how pooling subcategories (e.g. MFD virtue and vice) mixes categories of different valence."""
    df = corpora[corpora["subcategory"].notna()]
    if df.empty:
        return pd.DataFrame()
    counts = df.pivot_table(
        index=["corpus", "category"], columns="subcategory", values="word", aggfunc="size"
    )
    means = df.pivot_table(
        index=["corpus", "category"], columns="subcategory", values=variable, aggfunc="mean"
    )
    out = counts.add_prefix("n_").join(means.add_prefix(f"mean_{variable}_"))
    out[f"mean_{variable}_pooled"] = df.groupby(["corpus", "category"])[variable].mean()
    n = counts.sum(axis=1)
    for col in counts.columns:
        out[f"share_{col}"] = counts[col] / n
    return out.reset_index()


# ---------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (BOS/EOS), as the tokenizer itself produces them."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False)
    return [list(map(int, ids)) for ids in enc["input_ids"]]


def tokenize_words(corpus: pd.DataFrame, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> pd.DataFrame:
    """Token counts of every (corpus, word) under every tokenizer, bare (``"word"``) and with a leading space
    (``" word"``, how a word usually appears after another word or after ``"Answer:"``).

    Columns: ``corpus, word, model, n_tokens_bare, n_tokens_space, ids_bare, ids_space, tokens_bare,
    tokens_space`` (ids as lists of ints, tokens as the tokenizer's token strings).
    """
    words = corpus[corpus["entry"] != "stem"] if "entry" in corpus else corpus
    pairs = words[["corpus", "word"]].drop_duplicates().reset_index(drop=True)
    unique = list(pd.unique(pairs["word"]))
    frames = []
    for model, tok in tokenizers.items():
        bare = token_ids(tok, unique)
        space = token_ids(tok, [" " + w for w in unique])
        t = pd.DataFrame(
            {
                "word": unique,
                "model": model,
                "n_tokens_bare": [len(i) for i in bare],
                "n_tokens_space": [len(i) for i in space],
                "ids_bare": bare,
                "ids_space": space,
                "tokens_bare": [tok.convert_ids_to_tokens(i) for i in bare],
                "tokens_space": [tok.convert_ids_to_tokens(i) for i in space],
            }
        )
        frames.append(pairs.merge(t, on="word", how="left"))
    cols = [
        "corpus",
        "word",
        "model",
        "n_tokens_bare",
        "n_tokens_space",
        "ids_bare",
        "ids_space",
        "tokens_bare",
        "tokens_space",
    ]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)[cols]
    out["n_tokens_bare"] = out["n_tokens_bare"].astype("int64")
    out["n_tokens_space"] = out["n_tokens_space"].astype("int64")
    return out


def token_summary(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per corpus and model: words, how many are one token bare / with a leading space / only one way / both /
    neither, the one-token shares, and the mean token counts."""
    t = tokens.assign(
        one_bare=tokens["n_tokens_bare"] == 1,
        one_space=tokens["n_tokens_space"] == 1,
    )
    g = t.groupby(["corpus", "model"], sort=True)
    out = g.agg(
        n_words=("word", "size"),
        one_token_bare=("one_bare", "sum"),
        one_token_space=("one_space", "sum"),
        mean_tokens_bare=("n_tokens_bare", "mean"),
        mean_tokens_space=("n_tokens_space", "mean"),
        max_tokens_space=("n_tokens_space", "max"),
    ).reset_index()
    both = t.groupby(["corpus", "model"], sort=True).apply(
        lambda d: pd.Series(
            {
                "one_token_both": int((d["one_bare"] & d["one_space"]).sum()),
                "one_token_space_only": int((~d["one_bare"] & d["one_space"]).sum()),
                "one_token_bare_only": int((d["one_bare"] & ~d["one_space"]).sum()),
                "one_token_neither": int((~d["one_bare"] & ~d["one_space"]).sum()),
            }
        ),
        include_groups=False,
    )
    out = out.merge(both.reset_index(), on=["corpus", "model"])
    out["share_one_token_bare"] = out["one_token_bare"] / out["n_words"]
    out["share_one_token_space"] = out["one_token_space"] / out["n_words"]
    for c in ("one_token_bare", "one_token_space"):
        out[c] = out[c].astype("int64")
    return out


def token_share_by_category(
    tokens: pd.DataFrame, corpora: pd.DataFrame, variant: str = "space"
) -> pd.DataFrame:
    """Per corpus, model and label: scored words, the share that is one token (``variant`` "space" or "bare")
    and the mean token count, so that a tokenization difference between categories is visible."""
    col = f"n_tokens_{variant}"
    labelled = corpora[["corpus", "word", "category", "subcategory"]].merge(
        tokens[["corpus", "word", "model", col]], on=["corpus", "word"], how="inner"
    )
    labelled = labelled.assign(subcategory=labelled["subcategory"].fillna(""), one=labelled[col] == 1)
    out = (
        labelled.groupby(["corpus", "model", "category", "subcategory"])
        .agg(n_words=("word", "size"), share_one_token=("one", "mean"), mean_tokens=(col, "mean"))
        .reset_index()
    )
    out["subcategory"] = out["subcategory"].replace("", None)
    return out


def token_count_distribution(tokens: pd.DataFrame, variant: str = "space") -> pd.DataFrame:
    """Words per number of tokens (``variant`` "space" or "bare"), per corpus and model."""
    col = f"n_tokens_{variant}"
    return tokens.groupby(["corpus", "model", col]).size().rename("n_words").reset_index()


# ---------------------------------------------------------------------------------------------------------
# Tokenizers of the registered models
# ---------------------------------------------------------------------------------------------------------


def known_models() -> list[str] | None:
    """Names of the registered models (``rmvalues.models.registry()``), or None if that module is absent."""
    try:
        from . import models  # type: ignore[attr-defined]
    except ImportError:
        return None
    reg = models.registry()
    return list(reg)


def load_tokenizers(names: Iterable[str]) -> tuple[dict[str, PreTrainedTokenizerBase], list[dict[str, Any]]]:
    """Tokenizers of registered models (via ``rmvalues.models.load_tokenizer``) and what identifies each model
    (``rmvalues.models.model_info`` when available) for the manifest."""
    from . import models  # type: ignore[attr-defined]

    toks: dict[str, PreTrainedTokenizerBase] = {}
    infos: list[dict[str, Any]] = []
    for name in names:
        toks[name] = models.load_tokenizer(name)
        info: dict[str, Any] = {"name": name, "use": "tokenizer"}
        if hasattr(models, "model_info"):
            try:
                got = models.model_info(name)
                info.update(dict(got) if isinstance(got, Mapping) else vars(got))
            except Exception as exc:
                info["model_info_error"] = str(exc)
        info.setdefault("tokenizer_class", type(toks[name]).__name__)
        infos.append(info)
    return toks, infos


# ---------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------

PARAMETERS = (
    "corpora",
    "models",
    "tiny_category_threshold",
    "wordlist_size",
    "output_dir",
    "results_root",
    "run_name",
)


def check_parameters(params: Mapping[str, Any]) -> None:
    """Validate the corpora chapter's parameters before any work; raises ``ValueError`` saying how to fix them."""
    unknown = [k for k in params if k not in PARAMETERS]
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)}; valid parameters: {', '.join(PARAMETERS)}"
        )
    names = params.get("corpora", [])
    if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
        raise ValueError(f"corpora must be a non-empty list of corpus names, got {names!r}")
    valid = list_corpora()
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(
            f"unknown corpus name(s) {', '.join(map(repr, bad))}. Valid corpora: {', '.join(valid)} "
            f"(register new ones in {config_path()})"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"corpora lists a name twice: {names!r}")
    models = params.get("models", [])
    if isinstance(models, str) or not isinstance(models, list | tuple):
        raise ValueError(f"models must be a list of model names (may be empty), got {models!r}")
    known = known_models()
    if known is not None:
        bad = [m for m in models if m not in known]
        if bad:
            raise ValueError(
                f"unknown model name(s) {', '.join(map(repr, bad))}. Valid models: {', '.join(known)} "
                f"(see config/models.yaml)"
            )
    for key, low in (("tiny_category_threshold", 0), ("wordlist_size", 1)):
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    for key in ("output_dir", "results_root", "run_name"):
        if key in params and (not isinstance(params[key], str) or not params[key]):
            raise ValueError(f"{key} must be a non-empty string, got {params[key]!r}")


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------


def plot_token_counts(tokens: pd.DataFrame, variant: str = "space") -> Figure:
    """Bar chart: share of words by token count (capped at 5+), one panel per model, bars per corpus."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    col = f"n_tokens_{variant}"
    d = tokens.assign(tokens=tokens[col].clip(upper=5).map(lambda n: "5+" if n >= 5 else str(n)))
    share = (
        d.groupby(["model", "corpus"])["tokens"].value_counts(normalize=True).rename("share").reset_index()
    )
    models = sorted(share["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sns.barplot(
            data=share[share["model"] == model],
            x="tokens",
            y="share",
            hue="corpus",
            order=["1", "2", "3", "4", "5+"],
            ax=ax,
        )
        ax.set_title(f"{model} ({'leading space' if variant == 'space' else 'bare word'})")
        ax.set_xlabel("tokens per word")
        ax.set_ylabel("share of words")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_norms_by_category(
    corpora: pd.DataFrame, variables: Sequence[str] = ("zipf_frequency", "valence")
) -> Figure:
    """Box plots of each variable by category, one row per variable and one column per corpus; subcategories
    (virtue/vice) as hue where a corpus has them."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = {"zipf_frequency": "Zipf frequency (wordfreq)", "valence": "valence (Warriner)"}
    names = list(dict.fromkeys(corpora["corpus"]))
    fig, axes = plt.subplots(
        len(variables), len(names), figsize=(3.6 * len(names), 3.2 * len(variables)), squeeze=False
    )
    for j, name in enumerate(names):
        part = corpora[corpora["corpus"] == name]
        subs = list(pd.unique(part["subcategory"].dropna()))
        hue_order = sorted(subs, key=lambda v: (v != "virtue", v))
        for i, var in enumerate(variables):
            ax = axes[i][j]
            sns.boxplot(
                data=part,
                x="category",
                y=var,
                order=sorted(part["category"].unique()),
                hue="subcategory" if subs else None,
                hue_order=hue_order or None,
                ax=ax,
                fliersize=1.5,
            )
            ax.set_title(name if i == 0 else "")
            ax.set_xlabel("")
            ax.set_ylabel(labels.get(var, var) if j == 0 else "")
            ax.tick_params(axis="x", labelrotation=30)
            if ax.get_legend() is not None:
                if i == 0:
                    ax.legend(title=None, fontsize=8, loc="lower left")
                else:
                    ax.get_legend().remove()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# Findings in words
# ---------------------------------------------------------------------------------------------------------


def _p(p: float) -> str:
    return "p < .001" if p < 0.001 else f"p = {p:.3f}"


def findings(
    balance: pd.DataFrame,
    tokens_summary: pd.DataFrame | None = None,
    *,
    min_effect: float = 0.2,
    alpha: float = 0.05,
) -> str:
    """Markdown bullets stating the confounds found: category differences in a variable with |Cohen's d| >=
    ``min_effect`` and p < ``alpha`` (from :func:`category_balance`), and the one-token shares per model."""
    names = {"zipf_frequency": "word frequency (Zipf)", "valence": "valence", "arousal": "arousal"}
    lines = []
    for _, r in balance.iterrows():
        d = r["cohen_d"]
        if not np.isfinite(d) or abs(d) < min_effect or not r["p_value"] < alpha:
            continue
        where = r["corpus"]
        if "category" in r.index and isinstance(r["category"], str):  # a `within="category"` comparison
            where += f", {r['category']}"
        other = f"the rest of {r['corpus']}" if r["group_b"] == "rest" else f"{r['group_b']} words"
        lines.append(
            f"- **{where}**: {r['group_a']} words are {'higher' if d > 0 else 'lower'} in "
            f"{names.get(r['variable'], r['variable'])} than {other} (means {r['mean_a']:.2f} vs "
            f"{r['mean_b']:.2f}; d = {d:.2f}, rank-biserial = {r['rank_biserial']:.2f}, {_p(r['p_value'])}; "
            f"n = {int(r['n_a'])} vs {int(r['n_b'])})."
        )
    if not lines:
        lines.append(f"- No category difference reaches |d| >= {min_effect} with p < {alpha}.")
    if tokens_summary is not None and not tokens_summary.empty:
        for model, part in tokens_summary.groupby("model", sort=True):
            n = part["n_words"].sum()
            bare = part["one_token_bare"].sum() / n
            space = part["one_token_space"].sum() / n
            lines.append(
                f"- **{model}** tokenizer: of {n} words (counted once per corpus), {space:.0%} are a single "
                f"token with a leading space and {bare:.0%} without one; {part['one_token_space_only'].sum()} "
                f"are one token only with the space, {part['one_token_bare_only'].sum()} only without it."
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Word-set comparison
# ---------------------------------------------------------------------------------------------------------


def compare_word_sets(
    corpus: pd.DataFrame, a: str, b: str, *, by: str = "category", examples: int = 8
) -> pd.DataFrame:
    """How the scored words of corpora ``a`` and ``b`` overlap per ``by`` value: sizes, shared words, the share
    of ``b``'s words that ``a`` also has, and (alphabetically) the first of ``b``'s words that ``a`` misses."""
    live = scorable(corpus) if "status" in corpus else corpus
    wa_all, wb_all = live[live["corpus"] == a], live[live["corpus"] == b]
    rows = []
    for value in sorted(set(wa_all[by]) | set(wb_all[by])):
        wa = set(wa_all.loc[wa_all[by] == value, "word"])
        wb = set(wb_all.loc[wb_all[by] == value, "word"])
        missed = sorted(wb - wa)
        rows.append(
            {
                by: value,
                f"n_{a}": len(wa),
                f"n_{b}": len(wb),
                "n_shared": len(wa & wb),
                f"share_of_{b}_in_{a}": len(wa & wb) / len(wb) if wb else np.nan,
                f"{b}_missing_from_{a}": ", ".join(missed[:examples])
                + (" ..." if len(missed) > examples else ""),
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "COLUMNS",
    "CorpusError",
    "CorpusSpec",
    "WordList",
    "category_balance",
    "category_sizes",
    "check_parameters",
    "compare_groups",
    "compare_word_sets",
    "corpus_summary",
    "expand_stem",
    "find_cross_category",
    "find_duplicates",
    "find_multiword",
    "find_non_ascii",
    "findings",
    "input_checksums",
    "issue_counts",
    "list_corpora",
    "load_corpora",
    "load_corpus",
    "load_norms",
    "load_tokenizers",
    "norm_coverage",
    "plot_norms_by_category",
    "plot_token_counts",
    "prepare_corpora",
    "read_corpus_file",
    "registry",
    "scorable",
    "stem_expansions",
    "subcategory_mix",
    "token_count_distribution",
    "token_share_by_category",
    "token_summary",
    "tokenize_words",
    "validation_issues",
    "wordlist_config",
    "wordlist_words",
]
