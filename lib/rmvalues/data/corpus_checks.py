"""Validation of corpora: duplicates (two Unicode spellings of one word included), words under two labels,
empty or tiny categories, wildcard stems and their expansions, multi-word, non-ASCII and respelled entries,
corpus files outside the project (tables over the corpus model of :mod:`rmvalues.data.corpora`).
:func:`validation_issues` collects every finding as one row."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core.params import param
from . import word_forms
from .corpora import CorpusError, corpora_config_path, corpus_registry, label_text, scorable

#: Columns of an issue table (:func:`validation_issues`).
ISSUE_COLUMNS = ["corpus", "word", "check", "detail"]


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


def find_respelled(corpus: pd.DataFrame) -> pd.DataFrame:
    """Entries whose spelling in the file was not Unicode NFC: ``word`` is the NFC form they are read (and
    scored) as, ``file_spelling`` the file's, code points escaped (e.g. ``'cafe\\u0301' (NFD)``)."""
    spelling = corpus["source"].map(lambda s: word_forms.file_spelling(s) if isinstance(s, str) else None)
    out = corpus.loc[spelling.notna(), ["corpus", "word", "category", "subcategory", "line", "status"]].copy()
    out.insert(2, "file_spelling", spelling[spelling.notna()].map(word_forms.describe))
    return out.reset_index(drop=True)


def find_outside_project(names: Iterable[str], config: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The corpora of ``names`` whose file lies outside the project folder: ``corpus, path`` (absolute)
    ``, sha256``. The book's build then depends on a file the repository does not hold."""
    reg = corpus_registry(config)
    rows = []
    for name in names:
        path = reg[name].outside_project()
        if path is not None:
            rows.append({"corpus": name, "path": str(path), "sha256": reg[name].sha256()})
    return pd.DataFrame(rows, columns=["corpus", "path", "sha256"])


def find_cross_category(corpus: pd.DataFrame) -> pd.DataFrame:
    """Words listed under more than one (category, subcategory) label in a corpus, one row per word."""
    live = corpus[corpus["status"].isin(["ok", "conflict-dropped"])].copy()
    live["label"] = [label_text(r) for r in live[["category", "subcategory"]].to_dict("records")]
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
            reg = corpus_registry()
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


def _spelling_note(dup: pd.Series) -> str:
    """How a duplicate's two rows were spelled in the file, in line order, when either was normalised
    (``"; line 2 spells it 'cafe\\u0301' (NFD), line 4 in NFC: ..."``; else empty)."""
    rows = sorted([(dup["line"], dup["source"]), (dup["line_kept"], dup["source_kept"])], key=lambda r: r[0])
    spellings = [word_forms.file_spelling(s) if isinstance(s, str) else None for _, s in rows]
    if not any(spellings):
        return ""
    (first, _), (second, _) = rows
    a, b = (word_forms.describe(s) if s else f"in {word_forms.FORM}" for s in spellings)
    return (
        f"; line {first} spells it {a}, line {second} {b}: two spellings of one word, the same once "
        f"normalised to {word_forms.FORM}, scored once"
    )


def _unicode_rows(corpus: pd.DataFrame, duplicates: pd.DataFrame) -> list[dict[str, Any]]:
    """Duplicate rows (with their spellings where they differ) and the respelled entries no duplicate
    names."""
    rows: list[dict[str, Any]] = []
    covered = set()
    for _, r in duplicates.iterrows():
        covered |= {(r["corpus"], r["word"], r["line"]), (r["corpus"], r["word"], r["line_kept"])}
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["word"],
                "check": "duplicate",
                "detail": f"{label_text(r)} again on line {r['line']} ({r['source']}); kept line {r['line_kept']}"
                + _spelling_note(r),
            }
        )
    for _, r in find_respelled(corpus).iterrows():
        if (r["corpus"], r["word"], r["line"]) not in covered:
            rows.append(
                {
                    "corpus": r["corpus"],
                    "word": r["word"],
                    "check": "unicode_form",
                    "detail": f"{label_text(r)}: spelled {r['file_spelling']} on line {r['line']}; read as its "
                    f"{word_forms.FORM} form",
                }
            )
    return rows


def validation_issues(
    corpus: pd.DataFrame,
    *,
    tiny_category_threshold: int = 10,
    declared: Mapping[str, Sequence[str]] | None = None,
    outside: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """All findings as issue rows ``corpus, word, check, detail`` (the content of ``validation.parquet``).

    Checks: ``duplicate`` (two Unicode spellings of one word included), ``unicode_form`` (an entry not in
    NFC, normalised, that duplicates nothing), ``two_categories``, ``empty_category``, ``tiny_category``,
    ``wildcard_stem``, ``stem_without_expansions``, ``multi_word``, ``non_ascii``, and ``outside_project``
    for each corpus of ``outside`` (:func:`find_outside_project`). Category- and corpus-level rows have
    ``word`` = None.
    """
    rows = _unicode_rows(corpus, find_duplicates(corpus))
    for _, r in (outside if outside is not None else pd.DataFrame()).iterrows():
        rows.append(
            {
                "corpus": r["corpus"],
                "word": None,
                "check": "outside_project",
                "detail": f"read from {r['path']} (sha256 {r['sha256']}), outside the project folder: the "
                "book's build depends on a file the repository does not hold",
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
                    "detail": f"{label_text(r)}: {r['n_words']} words (threshold {tiny_category_threshold})",
                }
            )
    for _, r in stem_expansions(corpus).iterrows():
        rows.append(
            {
                "corpus": r["corpus"],
                "word": r["stem"],
                "check": "wildcard_stem" if r["n_expansions"] else "stem_without_expansions",
                "detail": f"{label_text(r)}: {r['n_expansions']} expansions ({r['n_scored']} scored)"
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


def unknown_corpora_problem(names: Sequence[str], field: str = "corpora") -> list[str]:
    """The one message every stage gives for corpus names that are not registered (``[]`` when all are):
    what is wrong, the valid names and where new ones are registered."""
    try:
        valid = list(corpus_registry())
    except CorpusError as exc:
        return [f"{field}: the corpus registry is invalid: {exc}"]
    bad = [n for n in names if n not in valid]
    if not bad:
        return []
    return [
        f"{field}: unknown corpus name(s) {', '.join(map(repr, bad))}. Valid corpora: {', '.join(valid)} "
        f"(register new ones in {corpora_config_path()})"
    ]


#: The help of every stage's ``corpora_run`` parameter, completed with what the stage reads from it.
CORPORA_RUN_HELP = "corpora run whose corpora.parquet supplies {}"


def corpora_run_field(what: str) -> Any:
    """Every stage's ``corpora_run`` schema field, declared here once: the corpora run (default ``default``)
    whose ``corpora.parquet`` supplies ``what`` (``corpora_run: str = corpora_run_field("the words to
    score")``)."""
    return param("default", help=CORPORA_RUN_HELP.format(what))
