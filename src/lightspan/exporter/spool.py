"""A size-bounded on-disk spool of OTLP export requests that could not be delivered.

Why on disk and why OTLP bytes: a store or Collector outage can outlast any in-memory buffer
that keeps the process's memory bounded, and a batch that is already encoded as an
``ExportTraceServiceRequest`` can be replayed byte for byte, by this process or by the next one
that starts with the same spool directory (the files outlive a crash).

Layout: one file per batch, ``<time_ns>-<pid>-<n>-<spans>.otlp``, holding length-prefixed records
(``>II``: span count, payload length; then the serialized request). Names sort oldest first.
A file is written as ``*.tmp`` and renamed, so a crash never leaves a half-written batch
behind a valid name. A batch being replayed is claimed by renaming it to ``*.inflight-<pid>``
(several processes may share a directory); it is renamed back if the replay fails, and claims
of processes that no longer run are released at start-up.

Bounded: when adding a batch would take the spool over ``max_bytes``, the oldest batches are
deleted and their spans are reported as evicted (the exporter counts them as dropped).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolEntry", "SpoolError"]

log = logging.getLogger("lightspan.exporter.spool")

_HEADER = struct.Struct(">II")
EVICT_LOG_INTERVAL_S = 10.0
"""At most one "spool full" warning per spool in this many seconds."""
_SUFFIX = ".otlp"
_INFLIGHT = ".inflight-"


class SpoolError(OSError):
    """The spool directory cannot be used (the message names it and the reason)."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled batch, claimed for replay."""

    path: Path
    spans: int
    size: int
    original: Path


def _spans_in_name(name: str) -> int:
    """Span count from a file name ``<t>-<pid>-<n>-<spans>.otlp`` (0 if unreadable)."""
    stem = name.split(_SUFFIX, 1)[0]
    try:
        return int(stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def encode_records(records: list[tuple[int, bytes]]) -> bytes:
    """``[(span_count, payload), ...]`` -> the file's bytes."""
    return b"".join(_HEADER.pack(n, len(p)) + p for n, p in records)


def decode_records(data: bytes, where: str = "spool file") -> list[tuple[int, bytes]]:
    """The file's bytes -> ``[(span_count, payload), ...]``; a truncated file raises SpoolError."""
    out = []
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            raise SpoolError(f"{where}: truncated record header at byte {offset}")
        n, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        if offset + size > len(data):
            raise SpoolError(f"{where}: record at byte {offset} wants {size} bytes, file ends")
        out.append((n, data[offset : offset + size]))
        offset += size
    return out


class Spool:
    """The spool directory; thread-safe within a process."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._pid = os.getpid()
        self._evicted = 0
        self._last_evict_log = -EVICT_LOG_INTERVAL_S
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"cannot create the span spool directory {self.path}: {e}") from e
        if not os.access(self.path, os.W_OK):
            raise SpoolError(f"the span spool directory {self.path} is not writable")
        self._recover()
        self._bytes, self._files = self._scan()

    # -- bookkeeping -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Remove stale ``*.tmp`` files; release claims of processes that are gone."""
        for p in self.path.iterdir():
            name = p.name
            if name.endswith(".tmp"):
                try:
                    if time.time() - p.stat().st_mtime > 60:
                        p.unlink()
                except OSError:
                    pass
            elif _INFLIGHT in name:
                base, _, pid = name.partition(_INFLIGHT)
                if pid.isdigit() and (int(pid) == self._pid or not _pid_alive(int(pid))):
                    try:
                        p.rename(self.path / base)
                    except OSError:
                        pass

    def _ready(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.name.endswith(_SUFFIX))

    def _scan(self) -> tuple[int, int]:
        total = files = 0
        for p in self._ready():
            try:
                total += p.stat().st_size
                files += 1
            except OSError:
                pass
        return total, files

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def files(self) -> int:
        return self._files

    def pending_spans(self) -> int:
        """Spans waiting in the spool (from the file names)."""
        return sum(_spans_in_name(p.name) for p in self._ready())

    # -- writing -------------------------------------------------------------------------------

    def add(self, payload: bytes, spans: int) -> tuple[bool, int]:
        """Write one batch. Returns ``(stored, evicted_spans)``: ``stored`` is False when the batch
        alone is larger than ``max_bytes`` (or the disk write failed); ``evicted_spans`` counts
        the spans of the oldest batches deleted to make room."""
        data = encode_records([(spans, payload)])
        if len(data) > self.max_bytes:
            log.warning(
                "span spool: a batch of %d span(s) (%d bytes) is larger than the spool's "
                "max_bytes (%d); dropped",
                spans,
                len(data),
                self.max_bytes,
            )
            return False, 0
        with self._lock:
            evicted = self._make_room(len(data))
            name = f"{time.time_ns():020d}-{self._pid}-{next(self._seq):06d}-{spans}{_SUFFIX}"
            tmp = self.path / (name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                tmp.rename(self.path / name)
            except OSError as e:
                log.error("span spool: cannot write %s: %s; %d span(s) dropped", tmp, e, spans)
                try:
                    tmp.unlink()
                except OSError:
                    pass
                return False, evicted
            self._bytes += len(data)
            self._files += 1
        return True, evicted

    def _make_room(self, need: int) -> int:
        evicted = 0
        if self._bytes + need <= self.max_bytes:
            return 0
        for p in self._ready():
            if self._bytes + need <= self.max_bytes:
                break
            try:
                size = p.stat().st_size
                p.unlink()
            except OSError:
                continue
            n = _spans_in_name(p.name)
            evicted += n
            self._bytes -= size
            self._files -= 1
        self._evicted += evicted
        now = time.monotonic()
        if evicted and now - self._last_evict_log >= EVICT_LOG_INTERVAL_S:
            self._last_evict_log = now
            log.warning(
                "span spool %s full (max_bytes=%d): oldest batches dropped, %d span(s) so far",
                self.path,
                self.max_bytes,
                self._evicted,
            )
        if self._bytes < 0 or self._files < 0:  # another process removed files
            self._bytes, self._files = self._scan()
        return evicted

    # -- replaying -----------------------------------------------------------------------------

    def claim_oldest(self) -> tuple[SpoolEntry, list[tuple[int, bytes]]] | None:
        """Claim the oldest batch for replay and read it; ``None`` when the spool is empty.

        A corrupt file is deleted (and logged) and the next one is tried.
        """
        with self._lock:
            for p in self._ready():
                claimed = p.with_name(p.name + f"{_INFLIGHT}{self._pid}")
                try:
                    p.rename(claimed)
                except OSError:
                    continue  # another process claimed it
                try:
                    data = claimed.read_bytes()
                    records = decode_records(data, str(p))
                except (OSError, SpoolError) as e:
                    log.error("span spool: unreadable batch %s removed: %s", p.name, e)
                    self._remove(claimed, p)
                    continue
                return SpoolEntry(claimed, _spans_in_name(p.name), len(data), p), records
        return None

    def _remove(self, claimed: Path, original: Path) -> None:
        try:
            size = claimed.stat().st_size
            claimed.unlink()
        except OSError:
            return
        self._bytes = max(0, self._bytes - size)
        self._files = max(0, self._files - 1)

    def done(self, entry: SpoolEntry) -> None:
        """The batch was delivered (or is permanently undeliverable): delete it."""
        with self._lock:
            self._remove(entry.path, entry.original)

    def release(self, entry: SpoolEntry) -> None:
        """The replay failed: put the batch back (it stays the oldest)."""
        with self._lock:
            try:
                entry.path.rename(entry.original)
            except OSError as e:
                log.error("span spool: cannot release %s: %s", entry.path, e)
