"""Delivery counters of the store exporter: what was sent, retried, spooled, replayed, lost.

Why counters of spans (not batches) behind one lock: the outage test and an operator both need
to answer "how many spans are missing from the store and why" exactly, and the counters are
updated from two threads (the processor's export thread and the spool's replay thread).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

__all__ = ["ExportStats", "StatsCounter"]


@dataclass(frozen=True, slots=True)
class ExportStats:
    """A snapshot of the exporter's counters (spans unless named otherwise)."""

    sent: int = 0
    """Spans the store (or Collector) acknowledged on the direct path, retries included."""
    retried: int = 0
    """Spans sent again after a failed attempt (in-line retries with backoff)."""
    spooled: int = 0
    """Spans written to the on-disk spool because the target was down or slow."""
    replayed: int = 0
    """Spans delivered from the spool once the target was back."""
    dropped: int = 0
    """Spans lost: target down with the spool off, spool full (oldest evicted), permanent errors."""
    rejected: int = 0
    """Spans the target received but refused (OTLP ``partial_success``, e.g. no rollout id)."""
    duplicates: int = 0
    """Spans the in-process store already had (replays are deduplicated; remote: not reported)."""
    failed_attempts: int = 0
    """Export attempts (batches) that failed, direct or replayed."""
    spool_files: int = 0
    """Batches waiting in the spool now."""
    spool_bytes: int = 0
    """Bytes the spool holds now."""

    @property
    def delivered(self) -> int:
        """Spans acknowledged by the target, directly or from the spool."""
        return self.sent + self.replayed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def log_line(self) -> str:
        """One line for the log: every counter, ``name=value``."""
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items())


class StatsCounter:
    """Thread-safe counters; :meth:`snapshot` gives an :class:`ExportStats`."""

    _FIELDS = (
        "sent",
        "retried",
        "spooled",
        "replayed",
        "dropped",
        "rejected",
        "duplicates",
        "failed_attempts",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self._FIELDS, 0)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                if n:
                    self._values[name] += n

    def snapshot(self, *, spool_files: int = 0, spool_bytes: int = 0) -> ExportStats:
        with self._lock:
            values = dict(self._values)
        return ExportStats(**values, spool_files=spool_files, spool_bytes=spool_bytes)
