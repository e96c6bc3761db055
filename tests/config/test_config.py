"""Configuration: defaults, the file, environment overrides and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightspan.config import ConfigError, LightspanConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_opt_in_and_match_the_documented_shape():
    cfg = load_config(environ={})
    al = cfg.agentLightning
    assert al.enabled is False
    assert al.store.type.value == "external" and al.store.address == "http://localhost:4747"
    assert al.optimization.enabled is False
    assert al.optimization.algorithm.value == "APO"
    assert al.optimization.training_interval.value == "weekly"
    assert al.tracing.sampling_ratio == 1.0 and al.tracing.capture_content is False


def test_shipped_core_config_equals_the_defaults():
    data = yaml.safe_load((ROOT / "core-config.yaml").read_text())
    assert parse_config(data, environ={}).model_dump() == LightspanConfig().model_dump()


def test_file_values_and_env_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "agentLightning:\n  enabled: true\n  store: {type: in_memory}\n"
        "  tracing: {sampling_ratio: 0.5}\n"
        "llm:\n  prices: {m: {input: 1, output: 2}}\n"
    )
    cfg = load_config(p, environ={})
    assert cfg.agentLightning.enabled and cfg.agentLightning.store.type.value == "in_memory"
    assert cfg.llm.prices["m"].output == 2
    env = {
        "LIGHTSPAN_AGENTLIGHTNING__TRACING__SAMPLING_RATIO": "0.25",
        "LIGHTSPAN_STORE_ADDRESS": "http://store:1",
        "LIGHTSPAN_ENABLED": "false",
        "LIGHTSPAN_LLM__PRICES__m__INPUT": "3",
    }
    cfg = load_config(p, environ=env)
    assert cfg.agentLightning.tracing.sampling_ratio == 0.25
    assert cfg.agentLightning.store.address == "http://store:1"
    assert cfg.agentLightning.enabled is False
    assert cfg.llm.prices["m"].input == 3 and cfg.llm.prices["m"].output == 2


def test_config_file_from_lightspan_config_variable(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("agentLightning: {enabled: true}\n")
    assert load_config(environ={"LIGHTSPAN_CONFIG": str(p)}).agentLightning.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "agentLightning: {store: {type: mongo}}",
            r"agentLightning\.store\.type: .*'external' or 'in_memory'.*'mongo'",
        ),
        ("agentLightning: {stor: {}}", r"agentLightning\.stor: unknown key"),
        (
            "agentLightning: {optimization: {algorithm: PPO}}",
            r"agentLightning\.optimization\.algorithm: .*'APO' or 'VERL'",
        ),
        (
            "agentLightning: {optimization: {training_interval: hourly}}",
            r"training_interval: .*'daily', 'weekly' or 'monthly'",
        ),
        (
            "agentLightning: {tracing: {sampling_ratio: 1.5}}",
            r"agentLightning\.tracing\.sampling_ratio: .*less than or equal to 1",
        ),
        ("agentLightning: {enabled: maybe}", r"agentLightning\.enabled: .*bool"),
        ("llm: {endpoint: localhost:8080}", r"llm\.endpoint: .*http://"),
        ("- a list", r"top level must be a mapping"),
        ("agentLightning: {enabled: [", r"not valid YAML"),
    ],
)
def test_bad_file_names_the_key(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(p, environ={})
    assert str(p) in str(exc.value)


def test_bad_environment_variable_names_the_variable():
    with pytest.raises(
        ConfigError, match="LIGHTSPAN_AGENTLIGHTNING__STOR__TYPE: unknown key 'STOR'"
    ):
        load_config(environ={"LIGHTSPAN_AGENTLIGHTNING__STOR__TYPE": "x"})
    with pytest.raises(ConfigError, match=r"(?s)environment overrides.*sampling_ratio"):
        load_config(environ={"LIGHTSPAN_SAMPLING_RATIO": "2"})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "nope.yaml", environ={})
