"""The long scores table and its loaders: the paper's released scores (through the data layer) and live scores;
the prompt design; the corpora run's table as the source of labels."""

from __future__ import annotations

import pandas as pd
import pytest

from rmvalues.core.errors import MissingInputError
from rmvalues.core.handoff import StageInput, input_path
from rmvalues.core.manifest import RunRecord
from rmvalues.data import prompts, scores
from rmvalues.data.corpora import corpora_input, load_corpus, read_corpora_table, scorable

GEMMA = {
    "nicolinho/QRM-Gemma-2-27B",
    "Skywork/Skywork-Reward-Gemma-2-27B-v0.2",
    "Skywork/Skywork-Reward-Gemma-2-27B",
    "Ray2333/GRM-gemma2-2B-rewardmodel-ft",
}
LLAMA = {
    "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
    "nicolinho/QRM-Llama3.1-8B",
    "LxzGordon/URM-LLaMa-3.1-8B",
    "Ray2333/GRM-Llama3-8B-rewardmodel-ft",
    "Ray2333/GRM-Llama3.2-3B-rewardmodel-ft",
    "RLHFlow/ArmoRM-Llama3-8B-v0.1",
}


def test_prompt_design_and_framing():
    ids = prompts.prompt_ids()
    assert len(ids) == len(set(ids)) == 54
    assert ids[0] == "best_ever_one" and "terrible_time_please" in ids
    assert prompts.framing_of("greatest_world_single") == "positive"
    assert prompts.framing_of("good_time_please") == "positive"
    assert prompts.framing_of("bad_ever_one") == "negative"
    assert [prompts.framing_of(p) for p in ids].count("positive") == 27
    with pytest.raises(ValueError, match="unknown adjective 'nice'.*best, greatest, good"):
        prompts.framing_of("nice_ever_one")


def test_load_prompts_matches_release():
    table = prompts.load_prompts()
    assert len(table) == 54
    row = table.set_index("prompt_id").loc["greatest_ever_one"]
    assert row["text"] == "What, in one word, is the greatest thing ever?"
    assert (row["adjective"], row["frame"], row["style"], row["framing"]) == (
        "greatest",
        "ever",
        "one",
        "positive",
    )
    assert table.groupby("framing").size().to_dict() == {"negative": 27, "positive": 27}
    # a selection keeps the design's order; a table keeps the order asked for
    assert prompts.select_prompts(["worst_ever_one", "best_ever_one"]) == ["best_ever_one", "worst_ever_one"]
    assert list(prompts.prompt_table(["worst_ever_one", "best_ever_one"])["prompt_id"]) == [
        "worst_ever_one",
        "best_ever_one",
    ]


def test_published_rm_mapping():
    rms = scores.published_rm_table()
    assert set(rms.loc[rms["family"] == "gemma", "model"]) == GEMMA
    assert set(rms.loc[rms["family"] == "llama", "model"]) == LLAMA
    assert rms["revision"].isna().all()  # not stated in the release
    # MFD files named big2_rewards_... are mapped to their RM by file name, to the corpus by folder
    mfd = scores.published_score_files("mfd2")
    assert set(mfd) == GEMMA | LLAMA
    assert (
        mfd["RLHFlow/ArmoRM-Llama3-8B-v0.1"]
        == "paper/scores/dict_MFD_20/big2_rewards_RLHFlow_ArmoRM-Llama3-8B-v0.1"
    )
    assert (
        mfd["nicolinho/QRM-Gemma-2-27B"] == "paper/scores/dict_MFD_20/MFD20_rewards_nicolinho_QRM-Gemma-2-27B"
    )
    big2 = scores.published_score_files("big2_nouns")
    assert all(name.startswith("paper/scores/dict_big2_nouns/") for name in big2.values())
    with pytest.raises(ValueError, match="published corpora: big2_nouns, mfd2"):
        scores.published_score_files("big2_expanded")


@pytest.fixture(scope="module")
def labels(corpora_results) -> pd.DataFrame:
    table, sums = read_corpora_table(corpora_input("default"), str(corpora_results), ["big2_nouns"])
    assert list(sums) == ["corpora/default/corpora.parquet"]
    return scores.labels_of(table)


@pytest.fixture(scope="module")
def big2(labels) -> pd.DataFrame:
    return scores.load_published_scores(labels, ["big2_nouns"])


def test_labels_from_the_corpora_run_equal_the_corpus_files(labels):
    direct = scorable(load_corpus("big2_nouns"))[["corpus", "word", "category", "subcategory"]]
    direct = direct.drop_duplicates().reset_index(drop=True)
    pd.testing.assert_frame_equal(labels.fillna("-"), direct.fillna("-"), check_dtype=False)


def test_published_big2_nouns_is_10_rms_x_54_prompts_x_263_words(big2):
    assert list(big2.columns) == list(scores.SCORE_COLUMNS)
    assert len(big2) == 10 * 54 * 263
    assert (
        big2["model"].nunique() == 10 and big2["prompt_id"].nunique() == 54 and big2["word"].nunique() == 263
    )
    assert not big2.duplicated(["model", "prompt_id", "word"]).any()
    fam = big2.drop_duplicates("model").set_index("model")["family"]
    assert set(fam[fam == "gemma"].index) == GEMMA and set(fam[fam == "llama"].index) == LLAMA
    framing = big2.drop_duplicates("prompt_id").set_index("prompt_id")["framing"]
    assert (framing == framing.index.map(scores.framing_of)).all()
    assert framing.value_counts().to_dict() == {"positive": 27, "negative": 27}
    words = big2.drop_duplicates("word")
    assert words["category"].value_counts().to_dict() == {"Communion": 159, "Agency": 104}
    assert (
        big2["subcategory"].isna().all() and big2["n_tokens"].isna().all() and big2["revision"].isna().all()
    )
    assert set(big2["source"].unique()) == {"published"} and set(big2["corpus"].unique()) == {"big2_nouns"}
    # two scored words are not in the corpus: dropped (as the paper's inner join does) and reported
    assert big2.attrs["unlabelled_words"] == {"big2_nouns": ["discussion", "eagerness"]}
    # a value read straight from the released parquet
    one = big2[(big2["model"] == "nicolinho/QRM-Llama3.1-8B") & (big2["word"] == "accuracy")]
    assert one.set_index("prompt_id").loc["best_ever_one", "score"] == pytest.approx(22.974941, abs=1e-6)


def test_prompt_subset_and_bad_prompt(labels):
    df = scores.load_published_scores(
        labels, ["big2_nouns"], prompts=["worst_time_please", "greatest_ever_one"]
    )
    assert sorted(df["prompt_id"].unique()) == ["greatest_ever_one", "worst_time_please"]
    assert len(df) == 10 * 2 * 263
    with pytest.raises(ValueError, match="unknown prompt id.*'greatest_ever_one'"):
        scores.load_published_scores(labels, ["big2_nouns"], prompts=["greatest_ever"])
    with pytest.raises(ValueError, match=r"holds no \['mfd2'\]"):
        scores.load_published_scores(labels, ["mfd2"])


def _live_table(**over) -> pd.DataFrame:
    rows = []
    for model, fam in (("org/a", "gemma"), ("org/b", "llama")):
        for prompt in ("best_ever_one", "worst_ever_one"):
            for word, cat, s in (("hope", "Communion", 1.0), ("power", "Agency", 2.0)):
                rows.append(
                    {
                        "model": model,
                        "revision": "abc123",
                        "family": fam,
                        "source": "live",
                        "prompt_id": prompt,
                        "framing": prompts.framing_of(prompt),
                        "corpus": "big2_nouns",
                        "category": cat,
                        "subcategory": None,
                        "word": word,
                        "n_tokens": 1,
                        "score": s,
                        **over,
                    }
                )
    return pd.DataFrame(rows)


def test_live_scores_through_a_verified_hand_off(tmp_path):
    inp = StageInput("scoring", "r1", ("scores.parquet",), "the live scores")
    with pytest.raises(
        MissingInputError, match=r"scoring/r1: manifest.json does not exist.*run stage 'scoring'"
    ):
        input_path(inp, "scores.parquet", tmp_path)
    record = RunRecord(tmp_path / "scoring" / "r1", stage="scoring", run="r1")
    record.write_parquet(_live_table(), "scores.parquet")
    record.finish()
    path, digest = input_path(inp, "scores.parquet", tmp_path)
    df = scores.read_live_scores(path, ["big2_nouns"], ["best_ever_one"])
    assert list(df.columns) == list(scores.SCORE_COLUMNS)
    assert len(df) == 4 and set(df["prompt_id"]) == {"best_ever_one"}
    assert df["n_tokens"].dtype.name == "Int64" and df["n_tokens"].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="hold nothing for corpora \\['mfd2'\\]"):
        scores.read_live_scores(path, corpora=["mfd2"])
    # a truncated file no longer matches its manifest: one clear error naming the run to redo
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(
        MissingInputError, match="does not match its manifest.*make chapter NAME=scoring RUN=r1"
    ):
        input_path(inp, "scores.parquet", tmp_path)


def test_conform_rejects_bad_tables():
    with pytest.raises(ValueError, match="lacks column\\(s\\) n_tokens"):
        scores.conform(_live_table().drop(columns="n_tokens"))
    with pytest.raises(ValueError, match="unknown source\\(s\\) \\['cached'\\]"):
        scores.conform(_live_table(source="cached"))
    with pytest.raises(ValueError, match="missing score"):
        scores.conform(_live_table(score=float("nan")))
