"""What the trainer reads: stored spans as runs (reward, calls, cost, latency), and the two
commands that need nothing else: ``lightspan train profile`` and ``lightspan train export``."""
