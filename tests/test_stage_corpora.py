"""Tests of the corpora: readers, wildcard expansion, validation, bad input (rmvalues.data) and the chapter's tokens and balance (rmvalues.stages.corpora)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rmvalues.core.errors import ParameterError
from rmvalues.data import corpora as D
from rmvalues.data import corpus_checks as K
from rmvalues.data import norms as N
from rmvalues.data.corpora import CorpusError, CorpusSpec
from rmvalues.stages import corpora as stage
from rmvalues.stages.corpora import analysis as A
from rmvalues.stages.corpora import text as T

MIRROR = Path("/work/shared/data")


def spec(**kw) -> CorpusSpec:
    base = {
        "name": "toy",
        "format": "csv",
        "categories": ("A", "B"),
        "word_column": "word",
        "category_column": "cat",
    }
    base.update(kw)
    return CorpusSpec(**base)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# -- readers ----------------------------------------------------------------------------------------------


def test_read_csv(tmp_path):
    f = write(tmp_path, "toy.csv", "word,cat,other\nalpha,A,x\nbeta,B,y\ngamma,A,z\n")
    df = D.read_corpus_file(f, spec())
    assert list(df.columns) == D.COLUMNS
    assert df["word"].tolist() == ["alpha", "beta", "gamma"]
    assert df["category"].tolist() == ["A", "B", "A"]
    assert df["subcategory"].isna().all()
    assert df["line"].tolist() == [2, 3, 4]
    assert set(df["source"]) == {"toy.csv (csv)"}
    assert set(df["status"]) == {"ok"} and set(df["entry"]) == {"word"}
    assert (df["corpus"] == "toy").all()


def test_read_csv_keeps_words_pandas_would_read_as_missing(tmp_path):
    f = write(tmp_path, "toy.csv", "word,cat\nnull,A\nNA,B\nnone,A\n")
    assert D.read_corpus_file(f, spec())["word"].tolist() == ["null", "NA", "none"]


def test_read_csv_category_map_and_subcategory_column(tmp_path):
    f = write(tmp_path, "toy.csv", "w,c,s\nalpha,agency,pos\nbeta,communion,neg\n")
    s = spec(
        word_column="w",
        category_column="c",
        subcategory_column="s",
        categories=("Agency", "Communion"),
        category_map={"agency": "Agency", "communion": "Communion"},
    )
    df = D.read_corpus_file(f, s)
    assert df[["word", "category", "subcategory"]].values.tolist() == [
        ["alpha", "Agency", "pos"],
        ["beta", "Communion", "neg"],
    ]


DIC = "%\n1\tposemo\n2\tnegemo\n3\tsocial\n%\nhappy\t1\nfriend\t1 3\nsad\t2\ncommon good\t3\nhate*\t2\n"


def test_read_dic_with_header_and_wildcards(tmp_path):
    f = write(tmp_path, "toy.dic", DIC)
    s = CorpusSpec(name="dic", format="dic", categories=("posemo", "negemo", "social"))
    words = ["the", "hated", "hate", "whatever", "hates", "hatter"]  # most frequent first
    df = D.read_corpus_file(f, s, words=words)
    got = df[["word", "category", "entry", "status", "line"]].values.tolist()
    assert got == [
        ["happy", "posemo", "word", "ok", 6],
        ["friend", "posemo", "word", "ok", 7],
        ["friend", "social", "word", "ok", 7],
        ["sad", "negemo", "word", "ok", 8],
        ["common good", "social", "word", "ok", 9],
        ["hate*", "negemo", "stem", "stem", 10],
        ["hated", "negemo", "expansion", "ok", 10],
        ["hate", "negemo", "expansion", "ok", 10],
        ["hates", "negemo", "expansion", "ok", 10],
    ]
    exp = df[df["entry"] == "expansion"]
    assert (exp["stem"] == "hate*").all()
    assert exp["source"].iloc[0] == "toy.dic (dic): wildcard-expanded from hate* (given word list of 6 words)"
    assert "wildcard stem, 3 expansions" in df.loc[df["entry"] == "stem", "source"].iloc[0]


def test_read_dic_space_separated_and_unknown_id(tmp_path):
    f = write(tmp_path, "toy.dic", "%\n1 good\n%\nvery nice 1\n")
    df = D.read_corpus_file(f, CorpusSpec(name="d", format="dic", categories=("good",)))
    assert df["word"].tolist() == ["very nice"]
    f = write(tmp_path, "bad.dic", "%\n1\tgood\n%\nnice\t1 7\n")
    with pytest.raises(CorpusError, match=r"line 4: entry 'nice' uses category id '7'.*defined ids: 1"):
        D.read_corpus_file(f, CorpusSpec(name="d", format="dic", categories=("good",)))
    f = write(tmp_path, "nohead.dic", "nice\t1\n")
    with pytest.raises(CorpusError, match=r"header block between two '%' lines"):
        D.read_corpus_file(f, CorpusSpec(name="d", format="dic", categories=("good",)))


def test_read_dicx_marks_and_na(tmp_path):
    f = write(tmp_path, "toy.dicx", 'DicTerm,Agency,Communion\nable,X,NA\n"kind",,"X"\nboth,X,X\n')
    s = CorpusSpec(name="b2", format="dicx", categories=("Agency", "Communion"))
    df = D.read_corpus_file(f, s)
    assert df[["word", "category", "line", "status"]].values.tolist() == [
        ["able", "Agency", 2, "ok"],
        ["kind", "Communion", 3, "ok"],
        ["both", "Agency", 4, "ok"],
        ["both", "Communion", 4, "ok"],
    ]


def test_read_dicx_rejects_unexpected_cell(tmp_path):
    f = write(tmp_path, "toy.dicx", "DicTerm,Agency,Communion\nable,X,\nkind,,1\n")
    with pytest.raises(CorpusError, match=r"line 3, column 'Communion': unexpected value '1'"):
        D.read_corpus_file(f, CorpusSpec(name="b2", format="dicx", categories=("Agency", "Communion")))


def test_mfd_split_into_category_and_subcategory(tmp_path):
    f = write(
        tmp_path,
        "mfd.dicx",
        "DicTerm,Care_Virtue,Care_Vice,Loyalty_Virtue,Loyalty_Vice\n"
        "kindness,X,,,\nharm,,X,,\nloyal,,,X,\ntraitor,,,,X\n",
    )
    s = CorpusSpec(
        name="mfd",
        format="dicx",
        categories=("Care", "Loyalty"),
        subcategories=("virtue", "vice"),
        label_rule="split",
        subcategory_map={"Virtue": "virtue", "Vice": "vice"},
    )
    df = D.read_corpus_file(f, s)
    assert df[["word", "category", "subcategory"]].values.tolist() == [
        ["kindness", "Care", "virtue"],
        ["harm", "Care", "vice"],
        ["loyal", "Loyalty", "virtue"],
        ["traitor", "Loyalty", "vice"],
    ]


# -- wildcard expansion ------------------------------------------------------------------------------------


def test_expand_stem_hand_computed():
    words = ["the", "accept", "accord", "access", "bacc", "acceptable", "ac"]
    assert D.expand_stem("acc*", words) == ["accept", "accord", "access", "acceptable"]
    assert D.expand_stem("accept*", words) == ["accept", "acceptable"]
    assert D.expand_stem("ACCEPT*", words) == ["accept", "acceptable"]
    assert D.expand_stem("zz*", words) == []
    with pytest.raises(CorpusError, match="only one"):
        D.expand_stem("a*c*", words)


def test_overlapping_stems_mark_duplicates_and_literal_wins(tmp_path):
    f = write(tmp_path, "toy.dicx", "DicTerm,A,B\ncare*,,X\ncareful*,X,\ncared,,X\n")
    words = ["care", "cared", "careful", "carefully", "career"]
    df = D.read_corpus_file(f, CorpusSpec(name="t", format="dicx", categories=("A", "B")), words=words)
    ok = D.scorable(df)
    # care* (B): care, cared, careful, carefully, career; careful* (A): careful, carefully; cared literal (B)
    assert sorted(ok.loc[ok["category"] == "B", "word"]) == [
        "care",
        "cared",
        "career",
        "careful",
        "carefully",
    ]
    assert sorted(ok.loc[ok["category"] == "A", "word"]) == ["careful", "carefully"]
    # "cared" is kept as the literal entry (line 4), the expansion from care* is the duplicate
    cared = df[df["word"] == "cared"]
    assert cared.set_index("entry")["status"].to_dict() == {"expansion": "duplicate", "word": "ok"}
    cross = K.find_cross_category(df)
    assert cross["word"].tolist() == ["careful", "carefully"]
    assert cross["labels"].tolist() == ["A, B", "A, B"]
    stems = K.stem_expansions(df)
    assert stems.set_index("stem")["n_expansions"].to_dict() == {"care*": 5, "careful*": 2}
    assert stems.set_index("stem")["n_scored"].to_dict() == {"care*": 4, "careful*": 2}


def test_wildcard_policies(tmp_path):
    f = write(tmp_path, "toy.dicx", "DicTerm,A,B\nhelp*,X,\n")
    s = CorpusSpec(name="t", format="dicx", categories=("A", "B"), wildcards="literal")
    assert D.read_corpus_file(f, s, words=["help"])["word"].tolist() == ["help*"]
    s = CorpusSpec(name="t", format="dicx", categories=("A", "B"), wildcards="error")
    with pytest.raises(CorpusError, match=r"line 2: wildcard entry 'help\*'.*wildcards: error"):
        D.read_corpus_file(f, s)


# -- validation -------------------------------------------------------------------------------------------


@pytest.fixture
def crafted(tmp_path) -> pd.DataFrame:
    rows = [
        "word,cat",
        "alpha,A",
        "beta,A",
        "alpha,A",  # duplicate (line 4 repeats line 2)
        "gamma,A",
        "gamma,B",  # two categories
        "ice cream,A",  # multi-word
        "café,A",  # non-ASCII
        "delta,A",
    ]
    f = write(tmp_path, "crafted.csv", "\n".join(rows) + "\n")
    return D.read_corpus_file(f, spec(categories=("A", "B", "C")))


def test_validation_findings(crafted):
    issues = K.validation_issues(crafted, tiny_category_threshold=3, declared={"toy": ["A", "B", "C"]})
    assert list(issues.columns) == K.ISSUE_COLUMNS
    by = {c: g for c, g in issues.groupby("check")}
    assert set(by) == {
        "duplicate",
        "two_categories",
        "tiny_category",
        "empty_category",
        "multi_word",
        "non_ascii",
    }
    assert by["duplicate"]["word"].tolist() == ["alpha"]
    assert "again on line 4" in by["duplicate"]["detail"].iloc[0]
    assert "kept line 2" in by["duplicate"]["detail"].iloc[0]
    assert by["two_categories"]["word"].tolist() == ["gamma"]
    assert "labels A, B (lines 5, 6)" in by["two_categories"]["detail"].iloc[0]
    assert by["tiny_category"]["detail"].tolist() == ["B: 1 words (threshold 3)"]
    assert by["empty_category"]["detail"].tolist() == ["C: 0 words (threshold 3)"]
    assert by["multi_word"]["word"].tolist() == ["ice cream"]
    assert by["non_ascii"]["word"].tolist() == ["café"]
    assert "U+00E9" in by["non_ascii"]["detail"].iloc[0]
    sizes = K.category_sizes(crafted, threshold=3, declared={"toy": ["A", "B", "C"]})
    assert sizes.set_index("category")["n_words"].to_dict() == {"A": 6, "B": 1, "C": 0}
    summary = K.corpus_summary(crafted).set_index("category")
    assert summary.loc["A", "duplicates"] == 1 and summary.loc["A", "scored_words"] == 6


def test_conflicts_drop_and_error(tmp_path):
    f = write(tmp_path, "c.csv", "word,cat\nx,A\nx,B\ny,A\n")
    dropped = D.read_corpus_file(f, spec(conflicts="drop"))
    assert dropped.set_index(["word", "category"])["status"].to_dict() == {
        ("x", "A"): "conflict-dropped",
        ("x", "B"): "conflict-dropped",
        ("y", "A"): "ok",
    }
    issue = K.validation_issues(dropped, tiny_category_threshold=0, declared={})
    assert "dropped from every label" in issue.loc[issue["check"] == "two_categories", "detail"].iloc[0]
    with pytest.raises(CorpusError, match=r"'x': A \(line 2\), B \(line 3\).*conflicts: keep-both"):
        D.read_corpus_file(f, spec(conflicts="error"))


# -- bad input --------------------------------------------------------------------------------------------


def test_error_missing_column(tmp_path):
    f = write(tmp_path, "m.csv", "token,Category\nalpha,A\n")
    with pytest.raises(CorpusError, match=r"m.csv has no column 'word' \(columns: token, Category\)"):
        D.read_corpus_file(f, spec(category_column="Category"))


def test_error_empty_file(tmp_path):
    f = write(tmp_path, "e.csv", "")
    with pytest.raises(CorpusError, match=r"e.csv is empty"):
        D.read_corpus_file(f, spec())
    f = write(tmp_path, "h.csv", "word,cat\n")
    with pytest.raises(CorpusError, match=r"h.csv has a header \(word, cat\) but no entries"):
        D.read_corpus_file(f, spec())


def test_error_bad_encoding_and_declared_fallback(tmp_path):
    f = write(tmp_path, "latin.csv", "word,cat\nalpha,A\ncaf\xe9,B\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin.csv is not valid utf-8: byte 0xe9 .*line 3.*Re-encode"):
        D.read_corpus_file(f, spec())
    df = D.read_corpus_file(f, spec(encoding="latin-1"))
    assert df["word"].tolist() == ["alpha", "café"]


def test_utf8_bom_is_accepted(tmp_path):
    f = write(tmp_path, "bom.csv", "\ufeffword,cat\nalpha,A\n")
    assert D.read_corpus_file(f, spec())["word"].tolist() == ["alpha"]


def test_error_category_typo(tmp_path):
    f = write(tmp_path, "t.csv", "word,cat\nalpha,A\nbeta,Agnecy\n")
    with pytest.raises(
        CorpusError, match=r"unknown category 'Agnecy' \(e.g. 'beta', line 3\).*Valid categories: A, B\. "
    ) as err:
        D.read_corpus_file(f, spec())
    assert "categorys" not in str(err.value) and "(categories: or category_map:)" in str(err.value)
    f = write(tmp_path, "s.csv", "word,cat,sub\nalpha,A,virtue\nbeta,B,vise\n")
    with pytest.raises(
        CorpusError, match=r"unknown subcategory 'vise'.*Valid subcategories: virtue, vice\. "
    ) as err:
        D.read_corpus_file(f, spec(subcategory_column="sub", subcategories=("virtue", "vice")))
    assert "subcategorys" not in str(err.value) and "(subcategories: or subcategory_map:)" in str(err.value)


def test_error_missing_file_says_relative_to_what(tmp_path):
    with pytest.raises(
        CorpusError, match=r"config path: 'data/none.csv', relative to the project root /"
    ) as err:
        spec(path="data/none.csv").file()
    absolute = tmp_path / "none.csv"
    with pytest.raises(CorpusError, match=rf"config path: '{absolute}'\)\. Fix the path") as err:
        spec(path=str(absolute)).file()
    assert "relative to" not in str(err.value)


def test_error_empty_word(tmp_path):
    f = write(tmp_path, "w.csv", "word,cat\nalpha,A\n,B\n")
    with pytest.raises(CorpusError, match=r"line 3: empty word"):
        D.read_corpus_file(f, spec())


def test_config_entry_errors(tmp_path):
    cfg = write(tmp_path, "c.yaml", "corpora:\n  x:\n    path: a.csv\n    format: csv\n    word_column: w\n")
    with pytest.raises(CorpusError, match="must declare its valid categories"):
        D.corpus_registry(cfg)
    cfg = write(
        tmp_path, "c2.yaml", "corpora:\n  x:\n    path: a.csv\n    format: xlsx\n    categories: [A]\n"
    )
    with pytest.raises(CorpusError, match="valid formats: csv, dicx, dic"):
        D.corpus_registry(cfg)
    cfg = write(
        tmp_path,
        "c3.yaml",
        "corpora:\n  x:\n    dataset: d\n    path: a.csv\n    format: dic\n    categories: [A]\n",
    )
    with pytest.raises(CorpusError, match="exactly one of 'dataset:'"):
        D.corpus_registry(cfg)
    cfg = write(
        tmp_path,
        "c4.yaml",
        "corpora:\n  x:\n    path: a.csv\n    format: dic\n    categories: [A]\n    colour: red\n",
    )
    with pytest.raises(CorpusError, match="unknown setting.*colour"):
        D.corpus_registry(cfg)


# -- Unicode spellings and files outside the project --------------------------------------------------------

CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"  # one word, two spellings that look the same
NAIVE_NFD = "nai\u0308ve"


@pytest.mark.parametrize("first, second", [(CAFE_NFC, CAFE_NFD), (CAFE_NFD, CAFE_NFC)])
def test_nfc_and_nfd_spellings_are_one_word_reported_and_scored_once(tmp_path, first, second):
    f = write(tmp_path, "u.csv", f"word,cat\n{first},A\nalpha,A\n{second},A\n{NAIVE_NFD},B\n")
    df = D.read_corpus_file(f, spec())
    assert df["word"].tolist() == [CAFE_NFC, "alpha", CAFE_NFC, "na\u00efve"]  # every word read as NFC
    assert df["status"].tolist() == ["ok", "ok", "duplicate", "ok"]
    nfd_line = 2 if first == CAFE_NFD else 4
    assert (
        df.loc[df["line"] == nfd_line, "source"].item() == "u.csv (csv): normalised to NFC from 'cafe\\u0301'"
    )
    scored = D.scorable(df)
    assert scored["word"].tolist() == [CAFE_NFC, "alpha", "na\u00efve"]  # scored once, in NFC
    issues = K.validation_issues(df, tiny_category_threshold=0, declared={})
    by = {c: g for c, g in issues.groupby("check")}
    assert set(by) == {"duplicate", "unicode_form", "non_ascii"}
    dup = by["duplicate"]
    assert dup["word"].tolist() == [CAFE_NFC]
    detail = dup["detail"].item()
    assert detail.startswith("A again on line 4 (u.csv (csv)") and "kept line 2" in detail
    spelled = {2: "line 2 spells it 'cafe\\u0301' (NFD), line 4 in NFC"}.get(
        nfd_line, "line 2 spells it in NFC, line 4 'cafe\\u0301' (NFD)"
    )
    assert f"kept line 2; {spelled}: two spellings of one word" in detail
    assert "two spellings of one word, the same once normalised to NFC, scored once" in detail
    # a word normalised without a twin is reported too, as a respelled entry
    assert by["unicode_form"]["detail"].tolist() == [
        "B: spelled 'nai\\u0308ve' (NFD) on line 5; read as its NFC form"
    ]
    respelled = K.find_respelled(df)
    assert respelled[["word", "file_spelling", "line"]].values.tolist() == [
        [CAFE_NFC, "'cafe\\u0301' (NFD)", nfd_line],
        ["na\u00efve", "'nai\\u0308ve' (NFD)", 5],
    ]
    assert K.corpus_summary(df).set_index("category").loc["A", "duplicates"] == 1


def test_nfd_spelling_under_another_label_is_one_word_under_two_labels(tmp_path):
    f = write(tmp_path, "u.csv", f"word,cat\n{CAFE_NFC},A\n{CAFE_NFD},B\n")
    df = D.read_corpus_file(f, spec())
    assert df["word"].tolist() == [CAFE_NFC, CAFE_NFC] and set(df["status"]) == {"ok"}
    issues = K.validation_issues(df, tiny_category_threshold=0, declared={})
    assert set(issues["check"]) == {"two_categories", "unicode_form", "non_ascii"}
    assert "labels A, B (lines 2, 3)" in issues.loc[issues["check"] == "two_categories", "detail"].item()


def test_wordfreq_and_published_words_are_already_nfc(mirror):
    """The NFC form the corpora are scored in is the form of the word list stems expand against and of the
    paper's released score files, so the published-score join matches word for word."""
    import unicodedata

    from rmvalues.data import datasets, scores

    words = D.wordlist_words(D.WordList(size=50000))
    assert all(unicodedata.is_normalized("NFC", w) for w in words)
    for corpus in scores.published_corpora():
        name = next(iter(scores.published_score_files(corpus).values()))
        published = pd.read_parquet(datasets.fetch(name))["response"]
        assert published.map(lambda w: unicodedata.is_normalized("NFC", w)).all()
        assert published.map(str.isascii).all()


def test_a_corpus_inside_the_project_is_not_outside():
    assert spec(path="README.md").outside_project() is None
    assert spec(dataset="paper/corpora/dict_big2_nouns").outside_project() is None


def test_a_corpus_outside_the_project_is_recorded_in_the_manifest_and_warned(tmp_path, monkeypatch, mirror):
    words = write(
        tmp_path, "mine.csv", f"term,label\nbrave,Agency\n{CAFE_NFD},Communion\n{CAFE_NFC},Communion\n"
    )
    cfg = write(
        tmp_path,
        "corpora.yaml",
        "wordlist: {source: wordfreq, lang: en, list: large, size: 1000}\n"
        f"corpora:\n  mine:\n    path: {words}\n    format: csv\n    word_column: term\n"
        "    category_column: label\n    categories: [Agency, Communion]\n",
    )
    monkeypatch.setattr(D, "corpora_config_path", lambda: cfg)
    assert D.corpus_spec("mine").outside_project() == words.resolve()
    params = stage.Params.build(corpora=["mine"], models=[], results_root=str(tmp_path / "results"))
    res = stage.run(params)
    out = tmp_path / "results" / "corpora" / "default"
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256(words.read_bytes()).hexdigest()
    assert manifest["extra"]["outside_project"] == {"mine": {"path": str(words.resolve()), "sha256": digest}}
    issues = pd.read_parquet(out / "validation.parquet")
    outside = issues[issues["check"] == "outside_project"]
    assert outside["corpus"].tolist() == ["mine"] and outside["word"].isna().all()
    assert (
        outside["detail"]
        .item()
        .startswith(f"read from {words.resolve()} (sha256 {digest}), outside the project")
    )
    listed = T.outside_project(res)
    assert listed["corpus"].tolist() == ["mine"]
    assert listed["read from"].item() == f"`{words.resolve()}`"
    assert listed["sha256"].item() == f"`{digest[:12]}…`"
    # the NFD spelling is the NFC word again: one scored row, reported as a duplicate
    table = pd.read_parquet(out / "corpora.parquet")
    assert sorted(table["word"]) == ["brave", CAFE_NFC]
    assert issues.loc[issues["check"] == "duplicate", "word"].tolist() == [CAFE_NFC]
    assert (out / "tables" / "respelled.csv").is_file() and len(res.respelled) == 1


def test_user_corpus_from_one_file_and_one_entry(tmp_path):
    words = write(tmp_path, "mine.csv", "term,label\nbrave,Agency\nwarm,Communion\n")
    cfg = write(
        tmp_path,
        "corpora.yaml",
        "wordlist: {source: wordfreq, lang: en, list: large, size: 1000}\n"
        f"corpora:\n  mine:\n    path: {words}\n    format: csv\n    word_column: term\n"
        "    category_column: label\n    categories: [Agency, Communion]\n",
    )
    assert D.list_corpora(cfg) == ["mine"]
    df = D.load_corpus("mine", config=cfg)
    assert df[["word", "category"]].values.tolist() == [["brave", "Agency"], ["warm", "Communion"]]
    with pytest.raises(CorpusError, match="unknown corpus 'yours'. Valid corpora: mine"):
        D.load_corpus("yours", config=cfg)


# -- tokens -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = [*"abcdefghijklmnopqrstuvwxyz", "▁"]
    merges = [
        ("c", "a"),
        ("ca", "t"),
        ("▁", "cat"),
        ("d", "o"),
        ("▁", "do"),
        ("▁", "h"),
        ("▁h", "i"),
        ("t", "o"),
    ]
    vocab = {c: i for i, c in enumerate(letters)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_token_counts_bare_and_leading_space(toy_tokenizer):
    corpus = pd.DataFrame(
        {
            "corpus": ["t"] * 5,
            "word": ["cat", "dog", "hi", "to", "to cat"],
            "category": ["A"] * 5,
            "entry": ["word"] * 5,
        }
    )
    tok = A.tokenize_words(corpus, {"toy": toy_tokenizer})
    got = tok.set_index("word")[["n_tokens_bare", "n_tokens_space"]].to_dict("index")
    # cat: [cat] / [▁cat]; dog: [do g] / [▁do g]; hi: [h i] / [▁hi]; to: [to] / [▁ to]; to cat: [to ▁cat] / [▁ to ▁cat]
    assert got == {
        "cat": {"n_tokens_bare": 1, "n_tokens_space": 1},
        "dog": {"n_tokens_bare": 2, "n_tokens_space": 2},
        "hi": {"n_tokens_bare": 2, "n_tokens_space": 1},
        "to": {"n_tokens_bare": 1, "n_tokens_space": 2},
        "to cat": {"n_tokens_bare": 2, "n_tokens_space": 3},
    }
    assert tok.set_index("word").loc["hi", "tokens_space"] == ["▁hi"]
    assert tok.set_index("word").loc["dog", "tokens_bare"] == ["do", "g"]
    s = A.token_summary(tok).iloc[0]
    assert (s["n_words"], s["one_token_bare"], s["one_token_space"]) == (5, 2, 2)
    assert (
        s["one_token_both"],
        s["one_token_space_only"],
        s["one_token_bare_only"],
        s["one_token_neither"],
    ) == (
        1,
        1,
        1,
        2,
    )
    assert s["share_one_token_space"] == pytest.approx(0.4)
    assert s["mean_tokens_space"] == pytest.approx(9 / 5)
    dist = A.token_count_distribution(tok)
    assert dist.set_index("n_tokens_space")["n_words"].to_dict() == {1: 2, 2: 2, 3: 1}


def test_tokenize_skips_stems_and_parquet_roundtrip(toy_tokenizer, tmp_path):
    corpus = pd.DataFrame(
        {
            "corpus": ["t", "t"],
            "word": ["cat*", "cat"],
            "category": ["A", "A"],
            "entry": ["stem", "expansion"],
        }
    )
    tok = A.tokenize_words(corpus, {"toy": toy_tokenizer})
    assert tok["word"].tolist() == ["cat"]
    tok.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert list(back["ids_space"].iloc[0]) == toy_tokenizer(" cat", add_special_tokens=False)["input_ids"]


# -- frequency and valence balance -------------------------------------------------------------------------


def test_compare_groups_hand_computed():
    r = A.compare_groups([1, 2, 3], [4, 5, 6])
    # means 2 vs 5, both sd 1 -> d = -3; Hedges' correction 1 - 3/(4*4-9) = 0.8 -> g = -2.4
    assert r["cohen_d"] == pytest.approx(-3.0)
    assert r["hedges_g"] == pytest.approx(-2.4)
    # every x below every y: U = 0, rank-biserial = -1, exact two-sided p = 2/C(6,3) = 0.1
    assert r["mwu_u"] == 0 and r["rank_biserial"] == pytest.approx(-1.0)
    assert r["p_value"] == pytest.approx(0.1)
    r = A.compare_groups([1, 5, 3, np.nan], [4, 2, 6])
    assert r["n_a"] == 3  # NaN dropped
    # pairs x > y: 5>4, 5>2, 3>2 -> U = 3, rank-biserial = 2*3/9 - 1 = -1/3
    assert r["mwu_u"] == 3 and r["rank_biserial"] == pytest.approx(-1 / 3)


def test_category_balance_on_tiny_table():
    table = pd.DataFrame(
        {
            "corpus": ["c"] * 6 + ["m"] * 6,
            "word": list("abcdefghijkl"),
            "category": ["A", "A", "A", "B", "B", "B", "X", "X", "Y", "Y", "Z", "Z"],
            "subcategory": [None] * 6 + ["virtue", "vice"] * 3,
            "zipf_frequency": [1, 2, 3, 4, 5, 6, 1, 1, 2, 2, 3, 3],
            "valence": [5, 5, np.nan, 7, 7, np.nan, 8, 2, 8, 2, 8, 2],
        }
    )
    bal = A.category_balance(table, ["zipf_frequency", "valence"])
    two = bal[bal["corpus"] == "c"].set_index("variable")
    assert two.loc["zipf_frequency", "cohen_d"] == pytest.approx(-3.0)
    assert (two.loc["valence", "n_a"], two.loc["valence", "n_b"]) == (2, 2)
    assert math.isnan(two.loc["valence", "cohen_d"])  # sd 0 in both groups: d undefined
    rest = bal[(bal["corpus"] == "m") & (bal["variable"] == "zipf_frequency")].set_index("group_a")
    assert rest["group_b"].unique().tolist() == ["rest"]
    # X (1,1) vs rest (2,2,3,3): mean 1 vs 2.5
    assert (rest.loc["X", "mean_a"], rest.loc["X", "mean_b"]) == (1.0, 2.5)
    assert rest.loc["X", "rank_biserial"] == pytest.approx(-1.0)
    within = A.category_balance(
        table[table["corpus"] == "m"], ["valence"], group="subcategory", within="category"
    )
    assert len(within) == 3 and (within["group_a"] == "vice").all()
    assert within["mean_a"].tolist() == [2.0, 2.0, 2.0] and within["mean_b"].tolist() == [8.0, 8.0, 8.0]
    mix = A.subcategory_mix(table).set_index("category")
    assert mix.loc["X", "share_virtue"] == 0.5 and mix.loc["X", "mean_valence_pooled"] == 5.0


def test_prepare_corpora_annotations(crafted):
    norms = pd.DataFrame(
        {"word": ["alpha", "gamma"], "valence": [6.5, 3.0], "arousal": [1.0, 2.0], "dominance": [4.0, 5.0]}
    )
    prep = N.prepare_corpora(crafted, norms=norms).set_index(["word", "category"])
    assert len(prep) == 7  # 8 rows - 1 duplicate
    assert prep.loc[("ice cream", "A"), "n_words"] == 2
    assert not prep.loc[("café", "A"), "is_ascii"]
    assert prep.loc[("gamma", "A"), "n_labels"] == 2 and prep.loc[("beta", "A"), "n_labels"] == 1
    assert prep.loc[("gamma", "B"), "valence"] == 3.0 and math.isnan(prep.loc[("beta", "A"), "valence"])
    import wordfreq

    assert prep.loc[("alpha", "A"), "zipf_frequency"] == wordfreq.zipf_frequency("alpha", "en")
    cov = N.norm_coverage(prep.reset_index()).set_index("category")
    assert (cov.loc["A", "n_words"], cov.loc["A", "n_valence"]) == (6, 2)


# -- parameters -------------------------------------------------------------------------------------------


def test_parameters_are_validated_by_the_schema_with_the_fix():
    ok = {"corpora": ["big2_nouns"], "models": [], "tiny_category_threshold": 10, "wordlist_size": 1000}
    assert stage.Params.build(ok).corpora == ["big2_nouns"]
    with pytest.raises(
        ParameterError, match=r"unknown corpus name\(s\) 'big3'. Valid corpora: big2_nouns, big2_expanded"
    ):
        stage.Params.build({**ok, "corpora": ["big3"]})
    with pytest.raises(ParameterError, match="corpora='big2_nouns': Input should be a valid list"):
        stage.Params.build({**ok, "corpora": "big2_nouns"})
    with pytest.raises(ParameterError, match="corpora=\\[\\]: List should have at least 1 item"):
        stage.Params.build({**ok, "corpora": []})
    with pytest.raises(ParameterError, match="wordlist_size=0: Input should be greater than or equal to 1"):
        stage.Params.build({**ok, "wordlist_size": 0})
    with pytest.raises(
        ParameterError, match="unknown parameter 'colour'; valid parameters of the corpora stage"
    ):
        stage.Params.build({**ok, "colour": 1})
    with pytest.raises(ParameterError, match="wordlist_size=True: Input should be a valid integer"):
        stage.Params.build({**ok, "wordlist_size": True})
    with pytest.raises(ParameterError, match=r"unknown model name\(s\) 'gpt-9'. Valid models: "):
        stage.Params.build({**ok, "models": ["gpt-9"]})
    # every problem at once
    with pytest.raises(ParameterError) as err:
        stage.Params.build({**ok, "corpora": ["big3"], "models": ["gpt-9"]})
    assert len(err.value.problems) == 2


def test_the_stage_writes_its_tables_and_manifest(tmp_path):
    params = stage.Params.build(corpora=["big2_nouns", "mfd2"], models=[], results_root=str(tmp_path))
    res = stage.run(params)
    out = tmp_path / "corpora" / "default"
    manifest = json.loads((out / "manifest.json").read_text())
    tables = [
        "balance.parquet",
        "corpora.parquet",
        "findings.json",
        "tokenization.parquet",
        "validation.parquet",
    ]
    assert sorted(o for o in manifest["outputs"] if "/" not in o) == tables
    keys = [f["key"] for f in json.loads((out / "findings.json").read_text())]
    assert keys == ["big2_frequency", "big2_valence"]  # no tokenizers in this run: no tokenization finding
    csvs = sorted(o for o in manifest["outputs"] if o.startswith("tables/"))
    assert "tables/balance.csv" in csvs and "tables/summary.csv" in csvs  # the book's downloads
    assert res.csv("summary").is_file()
    assert (
        "paper/corpora/dict_big2_nouns" in manifest["inputs"]
        and "taters/warriner-norms" in manifest["inputs"]
    )
    assert manifest["parameters"]["corpora"] == ["big2_nouns", "mfd2"]
    table = pd.read_parquet(out / "corpora.parquet")
    assert len(table) == len(res.table) and set(table["corpus"]) == {"big2_nouns", "mfd2"}
    assert res.tokens.empty and res.token_summary.empty  # no models: tokenization skipped
    # corpora from data sets are never outside the project: nothing to record, nothing to warn about
    assert "outside_project" not in manifest.get("extra", {}) and res.outside.empty
    assert T.outside_project(res).empty


# -- the released corpora ---------------------------------------------------------------------------------


@pytest.fixture
def mirror(monkeypatch):
    if not MIRROR.is_dir():
        pytest.skip("offline data mirror /work/shared/data is absent")
    monkeypatch.setenv("RMVALUES_DATA_MIRROR", str(MIRROR))


def test_real_big2_nouns(mirror):
    df = D.load_corpus("big2_nouns")
    assert len(df) == 263
    assert df["category"].value_counts().to_dict() == {"Communion": 159, "Agency": 104}
    assert (df["status"] == "ok").all() and df["subcategory"].isna().all()


def test_real_big2_expanded(mirror):
    df = D.load_corpus("big2_expanded")
    assert len(df) == 936
    assert df["category"].value_counts().to_dict() == {"Communion": 490, "Agency": 446}
    dups = K.find_duplicates(df)
    # 36 repeated rows over 35 words ("skill" three times); no word is under both categories
    assert len(dups) == 36 and dups["word"].nunique() == 35
    assert (dups["word"] == "skill").sum() == 2
    assert K.find_cross_category(df).empty
    assert len(D.scorable(df)) == 900


def test_real_mfd2(mirror):
    df = D.load_corpus("mfd2")
    assert len(df) == 2040 and df["word"].is_unique
    labels = df.groupby(["category", "subcategory"]).size()
    assert len(labels) == 10
    assert labels[("Care", "virtue")] == 170 and labels[("Loyalty", "vice")] == 34
    assert labels.sum() == 2040


def test_real_big2_dictionary_stems(mirror):
    df = D.load_corpus("big2_dictionary", wordlist_size=5000)
    stems = df[df["entry"] == "stem"]
    assert len(stems) == 246
    assert (df["entry"] != "expansion").sum() == 333  # rows of the dicx file
    exp = df[(df["entry"] == "expansion") & (df["stem"] == "accept*")]
    assert {"accept", "accepted"} <= set(exp["word"])
    assert (
        exp["source"]
        .str.contains(r"wildcard-expanded from accept\* \(wordfreq [\d.]+ en/large top 5000\)")
        .all()
    )


def test_findings_and_word_set_comparison():
    balance = pd.DataFrame(
        [
            {
                "corpus": "c",
                "variable": "valence",
                "group_a": "A",
                "group_b": "B",
                "n_a": 10,
                "n_b": 12,
                "mean_a": 5.0,
                "mean_b": 6.0,
                "cohen_d": -0.5,
                "rank_biserial": -0.3,
                "p_value": 0.0001,
            },
            {
                "corpus": "c",
                "variable": "zipf_frequency",
                "group_a": "A",
                "group_b": "B",
                "n_a": 10,
                "n_b": 12,
                "mean_a": 3.0,
                "mean_b": 3.1,
                "cohen_d": -0.1,
                "rank_biserial": -0.05,
                "p_value": 0.5,
            },
            {
                "corpus": "m",
                "variable": "zipf_frequency",
                "group_a": "Care",
                "group_b": "rest",
                "n_a": 5,
                "n_b": 9,
                "mean_a": 4.0,
                "mean_b": 3.0,
                "cohen_d": 0.8,
                "rank_biserial": 0.4,
                "p_value": 0.02,
            },
        ]
    )
    # |d| 0.1 is under the effect threshold; the other two are listed, one row each
    listed = T.confounds(balance)
    assert listed.to_dict("records") == [
        {
            "word list": "c",
            "variable": "valence",
            "words": "A words",
            "are": "lower",
            "than": "B words",
            "means": "5.00 vs 6.00",
            "Cohen's d": "\u22120.50",
            "rank-biserial": "\u22120.30",
            "p": "< 0.001",
            "n": "10 vs 12",
        },
        {
            "word list": "m",
            "variable": "word frequency (Zipf)",
            "words": "Care words",
            "are": "higher",
            "than": "the rest of m",
            "means": "4.00 vs 3.00",
            "Cohen's d": "0.80",
            "rank-biserial": "0.40",
            "p": "0.020",
            "n": "5 vs 9",
        },
    ]
    assert T.confounds(balance, min_effect=0.9).empty
    corpus = pd.DataFrame(
        {
            "corpus": ["x", "x", "x", "y", "y", "y"],
            "word": ["a", "b", "c", "a", "d", "e"],
            "category": ["K", "K", "L", "K", "K", "L"],
            "status": ["ok"] * 6,
        }
    )
    cmp = K.compare_word_sets(corpus, "x", "y").set_index("category")
    assert cmp.loc["K", ["n_x", "n_y", "n_shared"]].tolist() == [2, 2, 1]
    assert cmp.loc["K", "share_of_y_in_x"] == 0.5 and cmp.loc["K", "y_missing_from_x"] == "d"
    assert cmp.loc["L", "n_shared"] == 0


def test_token_share_by_category(toy_tokenizer):
    table = pd.DataFrame(
        {
            "corpus": ["t"] * 4,
            "word": ["cat", "dog", "hi", "to"],
            "category": ["A", "A", "B", "B"],
            "subcategory": [None] * 4,
        }
    )
    tok = A.tokenize_words(table, {"toy": toy_tokenizer})
    share = A.token_share_by_category(tok, table).set_index("category")
    # with a leading space: cat 1, dog 2 | hi 1, to 2
    assert share["share_one_token"].to_dict() == {"A": 0.5, "B": 0.5}
    assert share["mean_tokens"].to_dict() == {"A": 1.5, "B": 1.5}
    bare = A.token_share_by_category(tok, table, variant="bare").set_index("category")
    # bare: cat 1, dog 2 | hi 2, to 1
    assert bare["mean_tokens"].to_dict() == {"A": 1.5, "B": 1.5}


@pytest.mark.realmodel
def test_real_tokenizers_leading_space():
    """The embedded models' tokenizers (converted once into the cache by rmvalues.models)."""
    models = pytest.importorskip("rmvalues.models")
    corpus = pd.DataFrame(
        {"corpus": ["t"] * 3, "word": ["care", "communion", "agency"], "entry": ["word"] * 3}
    )
    toks = {name: models.load_tokenizer(name) for name in stage.Params.defaults()["models"]}
    tok = A.tokenize_words(corpus, toks).set_index(["model", "word"])
    for name in stage.Params.defaults()["models"]:
        assert (
            tok.loc[(name, "care"), "n_tokens_bare"] == 1 and tok.loc[(name, "care"), "n_tokens_space"] == 1
        )
        # "communion" is split bare ("comm"+"union" / "commun"+"ion") in both vocabularies
        assert tok.loc[(name, "communion"), "n_tokens_bare"] == 2
        assert tok.loc[(name, "care"), "ids_bare"] != tok.loc[(name, "care"), "ids_space"]
