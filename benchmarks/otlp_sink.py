"""A minimal OTLP/gRPC receiver for the tracing benchmarks: decodes each request, counts its
spans, answers success (optionally after a delay, like a slow collector).

Why: the exporters measured in ``tracing_overhead.py`` must do the work a real one does
(encode, send over gRPC, wait for the answer) against a server in another process, so that
the benchmark's process CPU holds the exporter's cost and none of the receiver's.

Run: ``python benchmarks/otlp_sink.py [--delay-ms 0]``: prints the port on the first line, then
serves until terminated.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    spans = 0

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        nonlocal spans
        req = ExportTraceServiceRequest.FromString(request)
        spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        return _OK

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    print(f"spans received: {spans}", file=sys.stderr)


if __name__ == "__main__":
    main()
