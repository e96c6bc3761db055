"""``lightspan store serve``: the process that exposes a store (``app``: the HTTP app, OTLP/gRPC
server and their lifecycle; ``rest``: Agent Lightning v0.3's REST API; ``auth``, ``metrics``,
``dashboard``; ``cli``: the command line). The OTLP endpoints themselves live in ``intake``."""
