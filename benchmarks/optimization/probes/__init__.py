"""Development probes: questions about a lever, asked on development seeds' tasks.

Each probe sends the requests a benchmark workflow sends (its test checks that) to the model
servers and prints what the lever would change: which answers flip (``flips``), whether answers
repeat (``determinism``), what a route, a cascade, a lazy vote or speculative decoding would do
(``routing``, ``escalation``, ``cascade``, ``agreement``, ``speculative``), what a trainer's
candidate would have done (``confirm``), or what APO's editor writes (``apo_edits``);
``answers`` is what agreement and cascade share. None of them is a benchmark result: they read
tasks the benchmark never tests on (docs/performance.md says which figures come from which).
"""
