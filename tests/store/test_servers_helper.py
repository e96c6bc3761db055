"""The helper that starts real store servers for the tests (``tests/store/servers.py``)."""

from __future__ import annotations

import socket

import pytest

from tests.store.servers import StoreProcess


@pytest.mark.parametrize("which", ["port", "grpc_port"])
def test_a_server_whose_port_was_taken_is_started_on_new_ports(which: str) -> None:
    """A port found free can be taken before the server binds it (CI once failed this way):
    the helper starts the server again on new ports instead of failing the test."""
    server = StoreProcess("memory")
    taken = getattr(server, which)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        server.start()
        try:
            assert getattr(server, which) != taken
            assert "cannot listen for" in server.log()
        finally:
            assert server.stop() == 0


def test_a_server_that_fails_for_another_reason_is_not_retried(tmp_path) -> None:
    # A directory as the database file: the server exits, and not for its ports.
    server = StoreProcess("sqlite", db=str(tmp_path))
    port = server.port
    with pytest.raises(RuntimeError, match="store server exited"):
        server.start()
    assert server.port == port
