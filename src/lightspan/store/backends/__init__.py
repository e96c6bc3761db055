"""Where rows end up: ``memory`` (in-process), ``sqlite`` and ``postgres`` (both on ``sql``, span
rows packed into per-batch chunks by ``span_chunks``); ``factory.open_store`` picks one by name.
Each implements ``core.tx.StoreTx``; the rules above them are shared."""
