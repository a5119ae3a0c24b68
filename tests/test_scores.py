"""The long scores table and its loaders: the paper's released scores (through the data layer) and live scores."""

from __future__ import annotations

import pandas as pd
import pytest

from rmvalues import scores

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
    ids = scores.prompt_ids()
    assert len(ids) == len(set(ids)) == 54
    assert ids[0] == "best_ever_one" and "terrible_time_please" in ids
    assert scores.framing_of("greatest_world_single") == "positive"
    assert scores.framing_of("good_time_please") == "positive"
    assert scores.framing_of("bad_ever_one") == "negative"
    assert [scores.framing_of(p) for p in ids].count("positive") == 27
    with pytest.raises(ValueError, match="unknown adjective 'nice'.*best, greatest, good"):
        scores.framing_of("nice_ever_one")


def test_load_prompts_matches_release():
    prompts = scores.load_prompts()
    assert len(prompts) == 54
    row = prompts.set_index("prompt_id").loc["greatest_ever_one"]
    assert row["text"] == "What, in one word, is the greatest thing ever?"
    assert (row["adjective"], row["frame"], row["style"], row["framing"]) == (
        "greatest",
        "ever",
        "one",
        "positive",
    )
    assert prompts.groupby("framing").size().to_dict() == {"negative": 27, "positive": 27}


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
def big2() -> pd.DataFrame:
    return scores.load_published_scores(["big2_nouns"])


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


def test_prompt_subset_and_bad_prompt():
    df = scores.load_published_scores(["big2_nouns"], prompts=["worst_time_please", "greatest_ever_one"])
    assert sorted(df["prompt_id"].unique()) == ["greatest_ever_one", "worst_time_please"]
    assert len(df) == 10 * 2 * 263
    with pytest.raises(ValueError, match="unknown prompt id.*'greatest_ever_one'"):
        scores.load_published_scores(["big2_nouns"], prompts=["greatest_ever"])


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
                        "framing": scores.framing_of(prompt),
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


def test_live_scores(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the scoring stage first.*scores='published'"):
        scores.load_live_scores("default", tmp_path)
    path = scores.live_scores_path("r1", tmp_path)
    path.parent.mkdir(parents=True)
    _live_table().to_parquet(path)
    df = scores.load_scores(
        "live", ["big2_nouns"], ["best_ever_one"], scoring_run="r1", results_root=tmp_path
    )
    assert list(df.columns) == list(scores.SCORE_COLUMNS)
    assert len(df) == 4 and set(df["prompt_id"]) == {"best_ever_one"}
    assert df["n_tokens"].dtype.name == "Int64" and df["n_tokens"].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="hold nothing for corpora \\['mfd2'\\]"):
        scores.load_live_scores("r1", tmp_path, corpora=["mfd2"])


def test_conform_rejects_bad_tables():
    with pytest.raises(ValueError, match="lacks column\\(s\\) n_tokens"):
        scores.conform(_live_table().drop(columns="n_tokens"))
    with pytest.raises(ValueError, match="unknown source\\(s\\) \\['cached'\\]"):
        scores.conform(_live_table(source="cached"))
    with pytest.raises(ValueError, match="missing score"):
        scores.conform(_live_table(score=float("nan")))
    with pytest.raises(ValueError, match="scores='nope'; valid: 'published', 'live', 'both'"):
        scores.load_scores("nope")
