"""The benchmark's hand-over to ``lightspan train run``: which models the trainer may use."""

from __future__ import annotations

import pytest
from benchmarks.optimization.run import parse_args
from benchmarks.optimization.trainer_seam import trainer_catalog

ENDPOINTS = {"small": "http://127.0.0.1:1/v1", "big": "http://127.0.0.1:2/v1"}
PRICES = {"small": (0.1, 0.2), "big": (0.3, 0.4)}


def test_the_catalog_offers_every_served_model_by_default() -> None:
    catalog = trainer_catalog(ENDPOINTS, PRICES)
    assert [c["model"] for c in catalog] == ["small", "big"]
    assert catalog[1] == {
        "endpoint": "http://127.0.0.1:2/v1",
        "model": "big",
        "price": {"input": 0.3, "output": 0.4},
    }


def test_trainer_models_keep_the_catalog_to_those_models() -> None:
    assert [c["model"] for c in trainer_catalog(ENDPOINTS, PRICES, ["big"])] == ["big"]
    with pytest.raises(ValueError, match="no served model \\['huge'\\]"):
        trainer_catalog(ENDPOINTS, PRICES, ["big", "huge"])
    with pytest.raises(ValueError, match="no served model"):
        trainer_catalog(ENDPOINTS, PRICES, [])


def test_the_flag_reaches_the_settings_and_an_unknown_model_is_named(capsys) -> None:
    models = "qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"
    _, s = parse_args(["--models", models, "--trainer-models", "qwen2.5-coder-1.5b"])
    assert s.trainer_models == ["qwen2.5-coder-1.5b"]
    _, s = parse_args(["--models", models])
    assert s.trainer_models == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    with pytest.raises(SystemExit):
        parse_args(["--models", models, "--trainer-models", "smollm2-135m"])
    assert "--trainer-models: 'smollm2-135m' is not one of --models" in capsys.readouterr().err
