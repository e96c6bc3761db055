"""Fixtures of the exporter tests: real ``lightspan store serve`` processes (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.servers import StoreProcess


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """A store server on a SQLite file, shared by a module's tests (each uses new rollout ids)."""
    db = tmp_path_factory.mktemp("store") / "store.db"
    server = StoreProcess("sqlite", str(db)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_sqlite_server(tmp_path: Path) -> Iterator[StoreProcess]:
    """A store server of the test's own (tests that stop and restart it)."""
    server = StoreProcess("sqlite", str(tmp_path / "store.db"))
    try:
        yield server
    finally:
        server.stop()
