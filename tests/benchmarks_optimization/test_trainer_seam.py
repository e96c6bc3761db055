"""The benchmark's hand-over to ``lightspan train run``: which models the trainer may use, and
the options it passes on."""

from __future__ import annotations

import pytest
from benchmarks.optimization.run import parse_args
from benchmarks.optimization.trainer_seam import trainer_arguments, trainer_catalog

from lightspan.trainer.cli import parse_run_args

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


@pytest.mark.parametrize("algorithm", ["both", "downshift"])
def test_apo_options_reach_the_trainer_under_its_own_option_names(tmp_path, algorithm) -> None:
    models = "qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"
    apo = ["--trainer-beam-rounds", "1", "--trainer-branch-factor", "3"]
    _, s = parse_args(["--models", models, "--algorithm", algorithm, *apo])
    assert s.trainer_apo == {"beam-rounds": 1, "branch-factor": 3}
    argv = trainer_arguments(
        tmp_path / "wf.yaml",
        tmp_path / "tasks.jsonl",
        tmp_path / "report",
        tmp_path / "catalog.yaml",
        algorithm=algorithm,
        seed=2,
        runners=2,
        min_tasks=4,
        optimizer=(ENDPOINTS, "big"),
        apo=s.trainer_apo,
    )
    parsed = parse_run_args(argv)  # the trainer's own parser
    assert (parsed.beam_rounds, parsed.branch_factor, parsed.beam_width) == (1, 3, 2)
    assert (parsed.optimizer_model, parsed.optimizer_endpoint) == ("big", ENDPOINTS["big"])
    assert parsed.algorithm == algorithm and parsed.seed == 2


def test_apo_options_need_an_apo_algorithm(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--trainer-beam-rounds", "1"])  # --algorithm cost by default
    assert "--trainer-beam-rounds is an APO option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--algorithm", "apo", "--trainer-branch-factor", "0"])
    assert "--trainer-branch-factor must be at least 1, got 0" in capsys.readouterr().err
    _, s = parse_args(["--algorithm", "apo"])
    assert s.trainer_apo == {}
