"""Corpora: the word lists the book scores, read into one long table (registry, file readers, wildcards).

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
  :func:`rmvalues.data.corpus_checks.validation_issues` reports each finding.

Words are normalised to Unicode NFC as a file is read (:mod:`rmvalues.data.word_forms`): two spellings of one
word (NFC and NFD) are one word, scored once; the second is a ``duplicate`` row, and a spelling that was
changed is named in ``source``. A ``path:`` corpus outside the project folder is allowed, and reported
(:meth:`CorpusSpec.outside_project`): the corpora stage records its absolute path and sha256 and warns.

Corpora are registered in ``config/corpora.yaml`` (one entry per corpus: file, format, columns, label rule,
declared categories, policies); :func:`list_corpora`, :func:`load_corpus`, :func:`load_corpora` read them.
Validation tables are in :mod:`rmvalues.data.corpus_checks`, frequency and norms in :mod:`rmvalues.data.norms`.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..core import paths
from ..core.errors import RmvaluesError
from ..core.files import sha256_file
from ..core.handoff import StageInput, input_path
from . import datasets, word_forms

#: The table the corpora stage writes (the scored rows, annotated): what later stages read.
CORPORA_TABLE = "corpora.parquet"
#: The corpora stage's token counts of every word in each registered model's tokenizer.
TOKENIZATION_TABLE = "tokenization.parquet"
#: Columns of the corpus model returned by :func:`load_corpus`.
COLUMNS = ["corpus", "word", "category", "subcategory", "source", "entry", "stem", "line", "status"]
FORMATS = ("csv", "dicx", "dic")
LABEL_RULES = ("column", "split")
CONFLICT_POLICIES = ("keep-both", "drop", "error")
WILDCARD_POLICIES = ("expand", "literal", "error")
#: Cell values of a dicx file that mean "not in this label"; MARKS mean "in this label".
EMPTY_CELLS = frozenset({"", "NA", "N/A", "NaN", "nan"})
MARKS = frozenset({"X", "x"})


class CorpusError(RmvaluesError, ValueError):
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
            return datasets.fetch(self.dataset)
        assert self.path is not None
        p = paths.resolve(self.path)
        if not p.is_file():
            relative = "" if Path(self.path).expanduser().is_absolute() else ", relative to the project root "
            raise CorpusError(
                f"corpus {self.name!r}: file {p} does not exist (config path: {self.path!r}"
                f"{relative and relative + str(paths.project_root())}). Fix the path in config/corpora.yaml."
            )
        return p

    def outside_project(self) -> Path | None:
        """The absolute path of a ``path:`` corpus file that lies outside the project folder (symbolic links
        resolved), else None: the book then depends on a file the repository does not hold. Data sets are
        never outside: their sha256 is pinned in ``config/datasets.yaml``."""
        if self.dataset:
            return None
        p = self.file().resolve()
        return None if p.is_relative_to(paths.project_root().resolve()) else p

    def sha256(self) -> str:
        """sha256 of the corpus file, for manifests."""
        if self.dataset:
            return datasets.get(self.dataset).sha256
        return sha256_file(self.file())

    @property
    def input_name(self) -> str:
        """Name under which the file is recorded as a manifest input."""
        return self.dataset or f"path:{self.path}"


_SPEC_KEYS = {f for f in CorpusSpec.__dataclass_fields__ if f != "name"}


def corpora_config_path() -> Path:
    return paths.config_dir() / "corpora.yaml"


def _load_config(path: Path | None) -> dict[str, Any]:
    path = Path(path) if path is not None else corpora_config_path()
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


def corpus_registry(path: str | os.PathLike[str] | None = None) -> dict[str, CorpusSpec]:
    """All registered corpora by name (``config/corpora.yaml`` unless ``path`` names another file)."""
    where = Path(path) if path is not None else corpora_config_path()
    raw = _load_config(where)
    return {str(name): _spec_from_entry(str(name), entry, where) for name, entry in raw["corpora"].items()}


def wordlist_config(path: str | os.PathLike[str] | None = None) -> WordList:
    """The ``wordlist:`` settings of ``config/corpora.yaml``."""
    where = Path(path) if path is not None else corpora_config_path()
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
    return list(corpus_registry(path))


def corpus_spec(name: str, path: str | os.PathLike[str] | None = None) -> CorpusSpec:
    reg = corpus_registry(path)
    if name not in reg:
        raise CorpusError(
            f"unknown corpus {name!r}. Valid corpora: {', '.join(reg)}. "
            f"Register new ones in {Path(path) if path else corpora_config_path()}."
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
    plural = "categories" if column == "category" else "subcategories"
    raise CorpusError(
        f"{file}: unknown {column} {', '.join(examples)} in corpus {spec.name!r}. Valid {plural}: "
        f"{', '.join(valid)}. Fix the typo in the file, or declare the {column} in config/corpora.yaml "
        f"({plural}: or {column}_map:)."
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
    nfc = df["word"].map(word_forms.normalise)
    df["source"] = [
        base if w == n else word_forms.spelling_source(base, w) for w, n in zip(df["word"], nfc, strict=True)
    ]
    df["word"] = nfc
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
                    "source": f"{row['source']}: wildcard stem, {len(hits)} expansions ({how})",
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
            where = ", ".join(f"{label_text(r)} (line {r['line']})" for _, r in rows.iterrows())
            examples.append(f"{w!r}: {where}")
        raise CorpusError(
            f"{file}: {len(conflicted)} word(s) of corpus {spec.name!r} are listed under two labels, and the "
            f"corpus has conflicts: error. {'; '.join(examples)}. Fix the file, or set conflicts: keep-both "
            f"(score the word under each label) or conflicts: drop (score it under none)."
        )
    if len(conflicted) and spec.conflicts == "drop":
        df.loc[live & df["word"].isin(conflicted), "status"] = "conflict-dropped"
    return df


def label_text(row: Mapping[str, Any]) -> str:
    """``category/subcategory`` (or ``category``) of a corpus row."""
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
    spec = corpus_spec(name, config)
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


def corpora_entries_used(names: Iterable[str]) -> dict[str, Any]:
    """The registry entries of the corpora ``names``, their files' checksums and the word list (for up-to-date
    keys)."""
    import dataclasses

    reg = corpus_registry()
    out: dict[str, Any] = {"wordlist": vars(wordlist_config())}
    for n in names:
        if n in reg:
            out[n] = {**dataclasses.asdict(reg[n]), "sha256": reg[n].sha256()}
    return out


def scorable(corpus: pd.DataFrame) -> pd.DataFrame:
    """The rows that are scored (``status == "ok"``): one per (corpus, word, category, subcategory)."""
    return corpus[corpus["status"] == "ok"].reset_index(drop=True)


def input_checksums(names: Iterable[str], config: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{input name: sha256}`` of the corpus files (for ``RunRecord.add_input``)."""
    reg = corpus_registry(config)
    return {reg[n].input_name: reg[n].sha256() for n in names}


# ---------------------------------------------------------------------------------------------------------
# The corpora stage's output, as later stages read it
# ---------------------------------------------------------------------------------------------------------


def corpora_input(
    run: str = "default",
    why: str = "the corpus words and their labels",
    corpora: Sequence[str] = (),
    tokenization: bool = False,
) -> StageInput:
    """The hand-off from a corpora run (selected by the reading run's ``corpora_run`` parameter): its
    ``corpora.parquet``, which must hold ``corpora`` (and its ``tokenization.parquet`` when
    ``tokenization``)."""
    requires = (("corpora", tuple(corpora)),) if corpora else ()
    files = (CORPORA_TABLE, TOKENIZATION_TABLE) if tokenization else (CORPORA_TABLE,)
    return StageInput("corpora", run, files, why, param="corpora_run", requires=requires)


def corpora_run_problem(inp: StageInput, corpora: Sequence[str], results_root: str) -> list[str]:
    """A problem when the corpora run exists but lacks some of ``corpora`` (checked before any work; an
    absent run is a missing input, or is produced by a planned run)."""
    path = inp.folder(results_root) / CORPORA_TABLE
    if not path.is_file():
        return []
    have = set(pd.read_parquet(path, columns=["corpus"])["corpus"])
    lacking = [c for c in corpora if c not in have]
    if not lacking:
        return []
    return [
        f"corpora: the corpora run {inp.run!r} holds {sorted(have)}, not {lacking}: run the corpora stage with "
        'these corpora (e.g. a named run: make chapter NAME=corpora RUN=<name> PARAMS="corpora=[...]") and '
        "point corpora_run at it"
    ]


def read_corpora_table(
    inp: StageInput, results_root: str | os.PathLike[str], corpora: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The verified ``corpora.parquet`` of a corpora run (restricted to ``corpora``; a requested corpus it
    lacks is a :class:`CorpusError`) and ``{input name: sha256}`` for the manifest."""
    path, digest = input_path(inp, CORPORA_TABLE, results_root)
    df = pd.read_parquet(path)
    if corpora is not None:
        problems = corpora_run_problem(inp, corpora, str(results_root))
        if problems:
            raise CorpusError(problems[0])
        df = df[df["corpus"].isin(list(corpora))].reset_index(drop=True)
    return df, {f"{inp.label}/{CORPORA_TABLE}": digest}
