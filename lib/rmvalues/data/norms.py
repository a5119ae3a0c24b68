"""Confounds of the word lists: word frequency (wordfreq Zipf) and the Warriner et al. (2013) affective norms.

:func:`prepare_corpora` turns the scored rows of a corpus model into the table the corpora stage writes
(``corpora.parquet``), annotated with ``n_words, is_ascii, n_labels, zipf_frequency, valence, arousal,
dominance``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from . import datasets
from .corpora import CorpusError, scorable
from .corpus_checks import n_words_in

NORMS_DATASET = "taters/warriner-norms"
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


def load_norms() -> pd.DataFrame:
    """Warriner, Kuperman & Brysbaert (2013) affective norms: ``word, valence, arousal, dominance``."""
    file = datasets.fetch(NORMS_DATASET)
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
