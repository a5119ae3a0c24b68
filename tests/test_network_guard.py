import socket

import pytest
from conftest import NETWORK_ATTEMPTS, NetworkAccessInTest


def test_outbound_connection_is_refused_and_recorded():
    before = len(NETWORK_ATTEMPTS)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkAccessInTest):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()
    assert len(NETWORK_ATTEMPTS) == before + 1
    del NETWORK_ATTEMPTS[before:]  # expected attempt: don't fail this test in teardown


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()
