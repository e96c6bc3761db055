"""lightspan: agent-workflow traces as training data for Agent Lightning.

Import-light on purpose: importing :mod:`lightspan` (or :mod:`lightspan.engine`) pulls in
no OpenTelemetry package. Tracing is switched on by :func:`lightspan.configure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lightspan.config import LightspanConfig


def configure(config: LightspanConfig | str | None = None, **kwargs: Any) -> Any:
    """Set up tracing from the configuration (no-op when ``agentLightning.enabled`` is false).

    The OpenTelemetry SDK is imported only when tracing is enabled.
    """
    from lightspan.config import load_config

    cfg = config if config is not None and not isinstance(config, str) else load_config(config)
    if not cfg.agentLightning.enabled:
        return None
    from lightspan.instrumentation.setup import configure_tracing

    return configure_tracing(cfg, **kwargs)
