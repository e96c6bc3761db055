"""Task files, the seeded split, and the statistics the decisions rest on."""

from __future__ import annotations

import json

import pytest

from lightspan.trainer.data import TaskFileError, load_tasks, split_tasks
from lightspan.trainer.evaluation.stats import bootstrap_mean_ci, paired_bootstrap_lower, quantile


def _write(tmp_path, rows, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_load_and_split_is_seeded_disjoint_and_complete(tmp_path):
    p = _write(tmp_path, [{"id": i, "input": i, "expected": i} for i in range(20)])
    tasks = load_tasks(p)
    a, b = split_tasks(tasks, seed=3), split_tasks(tasks, seed=3)
    assert [t.id for t in a.test] == [t.id for t in b.test]
    ids = [t.id for t in a.train + a.val + a.test]
    assert sorted(ids) == sorted(str(i) for i in range(20)) and len(set(ids)) == 20
    assert a.sizes() == {"train": 8, "val": 6, "test": 6}
    assert [t.id for t in split_tasks(tasks, seed=4).test] != [t.id for t in a.test]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "is empty"),
        (["", "  "], "is empty"),
        ([{"id": 1, "input": "x"}], "unlabeled"),
        ([{"id": 1, "expected": "x"}], "missing 'input'"),
        (["{not json"], ":1: not valid JSON"),
        (
            [{"id": 1, "input": 1, "expected": 1}, {"id": 1, "input": 2, "expected": 2}],
            "duplicate task id",
        ),
    ],
)
def test_bad_task_files_name_the_problem(tmp_path, rows, message):
    with pytest.raises(TaskFileError, match=message):
        load_tasks(_write(tmp_path, rows))


def test_missing_file_and_too_few_tasks(tmp_path):
    with pytest.raises(TaskFileError, match="cannot read task file"):
        load_tasks(tmp_path / "nope.jsonl")
    tasks = load_tasks(_write(tmp_path, [{"input": 1, "expected": 1}] * 2))
    with pytest.raises(TaskFileError, match="at least 3"):
        split_tasks(tasks)


def test_quantile_matches_linear_interpolation():
    assert quantile([], 0.5) is None
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile(list(range(101)), 0.95) == pytest.approx(95.0)


def test_paired_bootstrap_lower_bound():
    base = [1.0, 0.0] * 20
    same = list(base)
    assert paired_bootstrap_lower(same, base) == 0.0
    worse = [0.0 if i % 4 == 0 else b for i, b in enumerate(base)]  # loses 1 in 4 positives
    assert paired_bootstrap_lower(worse, base) < -0.1
    better = [1.0] * 40
    assert paired_bootstrap_lower(better, base) > 0.3
    with pytest.raises(ValueError, match="differ in size"):
        paired_bootstrap_lower([1.0], [1.0, 0.0])


def test_bootstrap_ci_brackets_the_mean():
    lo, hi = bootstrap_mean_ci([0.0, 1.0] * 25)
    assert lo < 0.5 < hi and hi - lo < 0.4
