"""Small fake wheels, so the fetch logic runs through the real pip without the registry."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from lightspan.localllm.models import ModelSpec, Part


def make_wheel(dest: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """Write ``{package}-{version}-py3-none-any.whl`` holding ``members`` and minimal metadata."""
    dist = package.replace("-", "_")
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def fake_model(
    index: Path, name: str, chunks: list[bytes], *, sha256: str | None = None, version: str = "1.0"
) -> ModelSpec:
    """A registry entry split over ``len(chunks)`` fake packages, with their wheels in ``index``."""
    index.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, chunk in enumerate(chunks, 1):
        package = f"lightspan-test-{name}-part{i}"
        member = f"{package.replace('-', '_')}/data/part{i:02d}.bin"
        make_wheel(index, package, version, {member: chunk})
        parts.append(Part(package, version, member))
    data = b"".join(chunks)
    return ModelSpec(
        name=name,
        file_name=f"{name}.gguf",
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        parts=tuple(parts),
    )
