"""Fixtures of the guide tests: a fake arithmetic model server and the port substitutions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.fake_llm import serving
from tests.fixtures.ports import free_port
from tests.trainer.conftest import ArithLLM, _handler


@pytest.fixture
def arith_model() -> Iterator[ArithLLM]:
    """The trainer tests' fake model (sums 'a + b' right, rambles unless asked to be brief):
    fast, and it makes the cost search's choices matter. Claims about real quality or cost are
    never made against it; ``test_readme_snippet_with_the_real_model`` uses the real one."""
    with serving(ArithLLM(), _handler) as state:
        yield state


def substitutions(model_base_url: str) -> dict[str, str]:
    """Literal addresses of the guides -> this test's servers (see tests/docs/harness.py)."""
    model = model_base_url.removeprefix("http://").removesuffix("/v1")
    rest, grpc = str(free_port()), str(free_port())
    return {
        "127.0.0.1:8080": model,
        # the store servers' ports: 4747/4317 (default REST/gRPC), 4749/4750 (the TLS one)
        "4747": rest,
        "4317": grpc,
        "4749": str(free_port()),
        "4750": str(free_port()),
        # a server started without --port/--grpc-port takes the defaults: make them ours too
        # (flags written in the block come later and win)
        "lightspan store serve ": f"lightspan store serve --port {rest} --grpc-port {grpc} ",
    }
