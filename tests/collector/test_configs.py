"""Every Collector configuration in collector-config/ is accepted by the Collector that runs it.

``validate`` decodes each configuration with the real component factories (unknown components,
misspelt keys and values that a component's own checks refuse fail) without opening ports. It
does not create the components, so some mistakes (an unknown tail-sampling policy type) only show
at start: each configuration is therefore also started on free ports until healthy. The
distribution itself is checked too: it must contain every component of the manifest.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.collector import (
    COLLECTOR_CONFIG_DIR,
    JAEGER_BIN,
    JAEGER_CONFIG,
    OTELCOL_BIN,
    CollectorFactory,
    require_binary,
)

CONFIGS = sorted(p for p in COLLECTOR_CONFIG_DIR.glob("*.yaml") if p.name != "manifest.yaml")
# Component types our distribution must provide (the manifest's modules, by their config names).
EXPECTED_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {
        "batch",
        "memory_limiter",
        "probabilistic_sampler",
        "tail_sampling",
        "attributes",
        "filter",
    },
    "exporters": {"otlp_grpc", "otlp_http", "debug", "file", "load_balancing"},
    "extensions": {"health_check"},
}


def _validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no LIGHTSPAN_* overrides: the defaults must be valid
    )


def test_the_expected_configurations_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"dev.yaml", "production.yaml", "production-tier1-loadbalancer.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configuration_passes_collector_validate(config: Path) -> None:
    result = _validate(require_binary(OTELCOL_BIN, "build-collector.sh"), config)
    assert result.returncode == 0, f"{config.name} is invalid:\n{result.stderr}{result.stdout}"


@pytest.mark.parametrize("config", [*CONFIGS, JAEGER_CONFIG], ids=lambda p: p.name)
def test_configuration_header_says_when_to_use_it(config: Path) -> None:
    header = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert any("Use it" in line for line in header), f"{config.name} lacks a 'Use it ...' header"


def test_validate_rejects_a_broken_configuration(tmp_path: Path) -> None:
    """Proves the check above can fail: a misspelt key and an unknown exporter."""
    broken = yaml.safe_load((COLLECTOR_CONFIG_DIR / "production.yaml").read_text())
    broken["processors"]["tail_sampling"]["decision_wiat"] = "1s"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = _validate(require_binary(OTELCOL_BIN, "build-collector.sh"), path)
    assert result.returncode != 0
    assert "decision_wiat" in result.stderr + result.stdout

    broken = yaml.safe_load((COLLECTOR_CONFIG_DIR / "dev.yaml").read_text())
    broken["service"]["pipelines"]["traces"]["exporters"].append("zipkin")
    path.write_text(yaml.safe_dump(broken))
    assert _validate(OTELCOL_BIN, path).returncode != 0


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configuration_starts_and_becomes_healthy(
    config: Path, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    """`validate` does not build components (a bad tail-sampling policy type passes it), so
    each configuration is also started for real: on free ports, with its exporters pointed at
    nothing (they retry in the background), it must report healthy."""
    collector = collector_factory(
        config, {"LIGHTSPAN_OTELCOL_SPAN_FILE": str(tmp_path / "spans.jsonl")}
    )
    assert httpx.get(collector.health_url, timeout=2).is_success
    assert "otelcol_process_uptime" in httpx.get(collector.metrics_url, timeout=5).text


def test_jaeger_configuration_passes_jaeger_validate() -> None:
    result = _validate(require_binary(JAEGER_BIN, "build-jaeger.sh"), JAEGER_CONFIG)
    assert result.returncode == 0, f"jaeger.yaml is invalid:\n{result.stderr}{result.stdout}"


def test_distribution_contains_every_manifest_component() -> None:
    result = subprocess.run(
        [str(require_binary(OTELCOL_BIN, "build-collector.sh")), "components"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    built = yaml.safe_load(result.stdout)
    for kind, expected in EXPECTED_COMPONENTS.items():
        names = {c["name"] for c in built.get(kind) or []}
        assert expected <= names, f"{kind} missing from the build: {expected - names}"
    manifest = yaml.safe_load((COLLECTOR_CONFIG_DIR / "manifest.yaml").read_text())
    n_modules = sum(len(manifest[k]) for k in EXPECTED_COMPONENTS)
    assert n_modules == sum(len(v) for v in EXPECTED_COMPONENTS.values()), (
        "manifest.yaml and EXPECTED_COMPONENTS disagree: update the test with the manifest"
    )
    assert {m["gomod"].split()[1] for k in EXPECTED_COMPONENTS for m in manifest[k]} == {"v0.161.0"}
