"""Fixtures of the runner tests: a real store server per test and workflows on the fake LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from lightspan.store.api.client import LightningStoreClient
from tests.store.servers import StoreProcess


@pytest.fixture
def store_server() -> Iterator[StoreProcess]:
    """``lightspan store serve`` (memory backend, health scan every 0.2 s) on a free port."""
    server = StoreProcess("memory", extra_args=("--scan-interval", "0.2")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(store_server: StoreProcess) -> AsyncIterator[LightningStoreClient]:
    c = LightningStoreClient(store_server.address)
    try:
        yield c
    finally:
        await c.close()
