"""How a span gets in: OTLP bytes become rows.

Follow one span: the transports (``otlp_http``: ``POST /v1/traces``; ``otlp_grpc``: the
TraceService) and the in-process exporter hand an OTLP/protobuf body to ``convert.convert``,
which makes :class:`~lightspan.store.intake.span_row.SpanRow` objects (the Rust converter,
``_otlp_native``, or ``otlp``, the Python specification; ``otlp_depth`` guards nesting); then
``ingest.ingest`` stores them (``core``) and reports what was rejected (OTLP
``partial_success``)."""
