"""The compact span page: lightspan's binary answer to a span query, for clients that ask for it.

Why: a 10,000-span page is ~12.6 MB of JSON. Our SQL backends already keep spans as
zstd-compressed runs of JSON documents (``span_chunks.py``), so the server can hand those runs
over as they are stored (no decompression, no joining), ~10-25x fewer bytes on the wire, and
the client decompresses them (~1 ms per MB) before one JSON parse. Agent Lightning's client
never asks for it (it sends no ``Accept`` naming :data:`MEDIA_TYPE`), so it keeps getting the
JSON page it expects; our client asks for it and reads plain JSON from servers that answer
with JSON (``agl store``, or ours without ``zstandard``).

Format (``Content-Type: application/vnd.lightspan.span-page+zstd``)::

    {"limit": L, "offset": O, "total": T, "count": N, "frames": [len_1, ..., len_k]}\\n
    frame_1 ... frame_k

Each frame is one zstd frame whose content is span documents (the JSON of ``Span``, compact,
so never a raw newline) joined by ``\\n``; the page's ``N`` spans are the frames' documents in
order. ``zstandard`` is in the ``store`` extra (the server) and the ``client`` extra.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MEDIA_TYPE",
    "FramesPage",
    "available",
    "compress_docs",
    "decode_frames",
    "encode_frames",
    "wants_frames",
]

MEDIA_TYPE = "application/vnd.lightspan.span-page+zstd"
_LEVEL = 1  # as the chunks are stored: ~1 us per span
_local = threading.local()


def available() -> bool:
    """Whether ``zstandard`` is installed (both ends need it)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _zstd() -> tuple[Any, Any]:
    """This thread's compressor and decompressor (the objects are not thread-safe)."""
    pair = getattr(_local, "zstd", None)
    if pair is None:
        import zstandard

        pair = _local.zstd = (
            zstandard.ZstdCompressor(level=_LEVEL),
            zstandard.ZstdDecompressor(),
        )
    return pair


def wants_frames(accept: str) -> bool:
    """Whether an ``Accept`` header names the compact page (and this end can write it)."""
    return MEDIA_TYPE in accept and available()


def compress_docs(docs: Sequence[str | bytes]) -> bytes:
    """One frame holding ``docs`` (for pages that are not whole stored chunks)."""
    joined = b"\n".join(d.encode() if isinstance(d, str) else d for d in docs)
    return _zstd()[0].compress(joined)


def encode_frames(
    frames: Sequence[bytes], count: int, limit: int, offset: int, total: int
) -> bytes:
    """The response body for a page of ``count`` spans held by ``frames``."""
    head = {"limit": limit, "offset": offset, "total": total, "count": count}
    head["frames"] = [len(f) for f in frames]
    return b"".join([json.dumps(head, separators=(",", ":")).encode(), b"\n", *frames])


@dataclass(frozen=True, slots=True)
class FramesPage:
    """A compact page's header fields and its (still compressed) frames."""

    frames: list[bytes]
    count: int
    limit: int
    offset: int
    total: int

    def arrays(self) -> Iterator[bytes]:
        """Each frame's documents as one JSON array, decompressed one frame at a time (parsing
        and building a frame's ~500 spans while they are in the CPU cache was ~1.5x faster
        than one array of the whole page); raises ``ValueError`` on a damaged frame."""
        decompress = _zstd()[1].decompress
        for frame in self.frames:
            try:
                docs = decompress(frame)
            except Exception as e:  # zstandard.ZstdError
                raise ValueError(f"compact span page with a damaged frame: {e}") from e
            # Compact JSON never holds a raw newline: the separators become the commas.
            yield b"".join((b"[", docs.replace(b"\n", b","), b"]"))


def decode_frames(body: bytes) -> FramesPage:
    """Check a compact page's header and split its frames; raises ``ValueError`` naming what
    is wrong (the frames are checked as :meth:`FramesPage.arrays` decompresses them)."""
    newline = body.find(b"\n")
    if newline < 0:
        raise ValueError("compact span page without a header line")
    try:
        head = json.loads(body[:newline])
        sizes = [int(n) for n in head["frames"]]
        count, limit, offset, total = (int(head[k]) for k in ("count", "limit", "offset", "total"))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"compact span page with a bad header: {e}") from e
    if sum(sizes) != len(body) - newline - 1 or min(sizes, default=1) <= 0:
        raise ValueError(
            f"compact span page frames of {sum(sizes)} bytes declared, "
            f"{len(body) - newline - 1} received"
        )
    frames, pos = [], newline + 1
    for size in sizes:
        frames.append(body[pos : pos + size])
        pos += size
    return FramesPage(frames, count, limit, offset, total)
