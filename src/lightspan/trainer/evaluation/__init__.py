"""How a candidate resource set is scored: in process or as store rollouts that runners
execute, runs standing in for sets that differ only in unreached caps, and the statistics that
decide between two sets on a few tasks."""
