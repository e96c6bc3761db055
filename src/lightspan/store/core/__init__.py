"""The store's rules, the same for every backend: ``store.CoreStore`` (rollouts, the queue,
attempts, resources, workers), the span write path (``span_writes``: de-duplication, sequence
ids, auto-registration, group commit) and reads (``span_reads``), status rules and health
verdicts (``lifecycle``, ``scanner``), and the transaction interface backends implement
(``tx.StoreTx``)."""
