"""Target selection from the configuration and OTEL_EXPORTER_OTLP_*, and the spool's bounds."""

from __future__ import annotations

import os

import pytest

from lightspan.config import ConfigError
from lightspan.exporter import Spool, exporter_from_config, resolve_target, target_from_config
from lightspan.exporter.spool import decode_records
from tests.exporter.helpers import config


def test_store_type_switches_between_in_process_and_remote_by_configuration_alone(tmp_path):
    spool = {"path": str(tmp_path / "spool")}
    mem = exporter_from_config(config(store={"type": "in_memory"}), environ={})
    ext = exporter_from_config(
        config(store={"type": "external", "address": "http://st:4747"}, exporter={"spool": spool}),
        environ={},
    )
    try:
        assert mem.store is not None and mem.target is None
        assert ext.store is None and ext.target is not None
        assert (ext.target.protocol, ext.target.endpoint) == ("grpc", "st:4317")
        assert ext.spool is not None and ext.spool.path.parent == tmp_path / "spool"
    finally:
        mem.shutdown()
        ext.shutdown()


def test_store_targets_carry_the_token_and_collectors_do_not():
    store = {"type": "external", "address": "http://st:4747", "token": "tok"}
    t = target_from_config(config(store={**store, "grpc_address": "st:9999"}), environ={})
    assert (t.endpoint, t.headers["authorization"]) == ("st:9999", "Bearer tok")
    h = target_from_config(config(store=store, exporter={"protocol": "http/protobuf"}), environ={})
    assert h.endpoint == "http://st:4747/v1/traces" and h.headers["authorization"] == "Bearer tok"
    c = target_from_config(config(store=store, exporter={"endpoint": "col:4317"}), environ={})
    assert c.endpoint == "col:4317" and "authorization" not in c.headers


def test_otel_exporter_variables_are_honoured():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=agents,authorization=Bearer%20abc",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3",
    }
    t = target_from_config(config(), environ=env)
    assert t.protocol == "http/protobuf"
    assert t.endpoint == "http://collector:4318/v1/traces"
    assert t.headers == {"x-team": "agents", "authorization": "Bearer abc"}
    assert (t.compression, t.timeout) == ("gzip", 3.0)
    # The traces-specific endpoint is used as is; gRPC takes host:port, https means TLS.
    t2 = resolve_target(
        None,
        environ={
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://col.example:4317",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        },
    )
    assert (t2.protocol, t2.endpoint, t2.insecure) == ("grpc", "col.example:4317", False)
    with pytest.raises(ConfigError, match="OTLP protocol 'http/json'"):
        target_from_config(config(), environ={**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_spool_evicts_the_oldest_batches_and_counts_their_spans(tmp_path):
    spool = Spool(tmp_path, max_bytes=3 * (8 + 100))
    for i in range(3):
        assert spool.add(bytes([i]) * 100, spans=10 + i) == (True, 0)
    assert (spool.files, spool.size_bytes, spool.pending_spans()) == (3, 324, 33)
    assert spool.add(b"x" * 100, spans=5) == (True, 10)  # the oldest (10 spans) made room
    assert spool.add(b"y" * 1000, spans=7) == (False, 0)  # larger than the whole spool
    entry, records = spool.claim_oldest()
    assert records == [(11, bytes([1]) * 100)]
    spool.release(entry)
    assert spool.files == 3
    # A new Spool on the same directory (the next process) sees the same batches.
    again = Spool(tmp_path, max_bytes=10_000)
    assert (again.files, again.pending_spans()) == (3, 11 + 12 + 5)
    entry, _ = again.claim_oldest()
    again.done(entry)
    assert again.files == 2 and len(os.listdir(tmp_path)) == 2


def test_truncated_spool_file_is_removed_not_replayed(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.add(b"a" * 50, spans=1)
    spool.add(b"b" * 50, spans=2)
    oldest = sorted(tmp_path.iterdir())[0]
    oldest.write_bytes(oldest.read_bytes()[:20])
    fresh = Spool(tmp_path, max_bytes=10_000)
    _entry, records = fresh.claim_oldest()
    assert records == [(2, b"b" * 50)] and fresh.files == 1
    with pytest.raises(OSError, match="truncated|wants"):
        decode_records(b"\x00\x00\x00\x01\x00\x00\x00\x09abc")


def test_unusable_spool_directory_is_a_configuration_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = config(exporter={"spool": {"path": str(blocker / "spool")}})
    with pytest.raises(ConfigError, match=r"agentLightning\.exporter\.spool\.path"):
        exporter_from_config(cfg, environ={})


@pytest.mark.parametrize(
    "protocol, endpoint, prefix",
    [
        ("http/protobuf", "http://127.0.0.1:4747/v1/traces", "http-127_0_0_1_4747-"),
        ("http/protobuf", "https://store.example:443/v1/traces", "http-store_example_443-"),
        ("grpc", "127.0.0.1:4317", "grpc-127_0_0_1_4317-"),
        ("grpc", "http://127.0.0.1:4317", "grpc-127_0_0_1_4317-"),
    ],
)
def test_spool_directory_names_the_protocol_and_host_once(tmp_path, protocol, endpoint, prefix):
    from lightspan.exporter import spool_dir_for
    from lightspan.exporter.transport import OtlpTarget

    name = spool_dir_for(tmp_path, OtlpTarget(protocol=protocol, endpoint=endpoint)).name
    assert name.startswith(prefix) and len(name) == len(prefix) + 8, name


def test_the_store_endpoint_is_derived_in_one_place():
    from lightspan.config import StoreConfig
    from lightspan.exporter import store_otlp_endpoint

    plain = StoreConfig(address="http://st:4747/")
    tls = StoreConfig(address="https://st.example")
    own = StoreConfig(address="http://st:4747", grpc_address="st:9999")
    assert store_otlp_endpoint(plain, "grpc") == "st:4317"
    assert store_otlp_endpoint(plain, "http/protobuf") == "http://st:4747/v1/traces"
    assert store_otlp_endpoint(tls, "grpc") == "https://st.example:4317"  # TLS kept
    assert store_otlp_endpoint(own, " GRPC ") == "st:9999"
    assert store_otlp_endpoint(own, "http") == "http://st:4747/v1/traces"
