"""Test-wide guards: no network (any non-loopback connection attempt fails the test), offline env."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # tests/tinymodels.py and friends

# Offline, always: model hubs, dataset hubs and our own data downloads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["RMVALUES_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
_shared = ROOT.parent / "shared" / "data"
if not os.environ.get("RMVALUES_DATA_MIRROR") and _shared.is_dir():
    os.environ["RMVALUES_DATA_MIRROR"] = str(_shared)

# Hermetic: the suite never reads or writes the project's results/ (a newcomer's `make all` output must not
# change what the tests see). Stage runs in tests write under a temporary results root.
os.environ["RMVALUES_RESULTS"] = tempfile.mkdtemp(prefix="rmvalues-test-results-")

NETWORK_ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkAccessInTest(RuntimeError):
    pass


def _guarded(real):
    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None) or _is_local(address):
            return real(self, address)
        NETWORK_ATTEMPTS.append(repr(address))
        raise NetworkAccessInTest(f"test tried to open a network connection to {address!r}")

    return connect


socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _fail_on_network_attempt():
    """Even if library code swallows the exception, an attempted connection fails the test."""
    before = len(NETWORK_ATTEMPTS)
    yield
    attempts = NETWORK_ATTEMPTS[before:]
    if attempts:
        pytest.fail(f"network access attempted during the test: {attempts}")


@pytest.fixture
def shared_mirror() -> Path:
    mirror = os.environ.get("RMVALUES_DATA_MIRROR")
    if not mirror or not Path(mirror).is_dir():
        pytest.skip("offline data mirror (../shared/data) not available")
    return Path(mirror)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh user cache, so tests see the fetch logic from scratch."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RMVALUES_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def corpora_results(tmp_path_factory) -> Path:
    """A results root holding the corpora run ``default`` of ``big2_nouns`` and ``mfd2`` (no tokenizers): the
    upstream output that the scoring, implicit, training and statistics stages read. Pass it as
    ``results_root`` (with ``corpora_run="default"``)."""
    mirror = os.environ.get("RMVALUES_DATA_MIRROR")
    if not mirror or not Path(mirror).is_dir():
        pytest.skip("offline data mirror (../shared/data) not available")
    from rmvalues.stages import corpora

    root = tmp_path_factory.mktemp("results")
    corpora.run(corpora.Params.build(corpora=["big2_nouns", "mfd2"], models=[], results_root=str(root)))
    return root
