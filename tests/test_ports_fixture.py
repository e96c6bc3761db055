"""The ports tests give their servers (``tests/fixtures/ports.py``)."""

from __future__ import annotations

import socket

from tests.fixtures import ports


def test_ports_come_from_outside_the_ephemeral_range_and_are_not_repeated() -> None:
    """Outgoing connections take their local ports from the ephemeral range, so a port chosen
    there can be taken before the server binds it; chosen outside it, only a server takes it."""
    low, high = ports.ephemeral_range()
    handed = [ports.free_port() for _ in range(300)]
    assert len(set(handed)) == len(handed)
    assert not [p for p in handed if low <= p <= high]
    assert all(p >= 1024 for p in handed)


def test_a_port_with_a_listener_is_not_handed_out(monkeypatch) -> None:
    """A drawn port that something listens on is skipped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports.free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        draws = iter([taken, taken, taken + 1 if taken < 65535 else taken - 1])
        monkeypatch.setattr(ports.random, "randint", lambda a, b: next(draws))
        monkeypatch.setattr(ports, "_handed_out", set())
        assert ports.free_port() != taken


def test_an_unusual_ephemeral_range_falls_back_to_the_kernels_choice(monkeypatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free
