"""``lightspan train schedule``: train a workflow at ``optimization.training_interval``.

State lives in the store (``trainer.<workflow>.state``: last run, lease owner and expiry), so
any number of schedulers on any machines can run and only one trains a workflow at a time:
a scheduler takes the lease, waits a moment and reads it back; if another took it since, it
backs off. ``--once`` runs if due and exits (for cron). Options of ``lightspan train run``
given after ``--`` (a model catalog, successive-halving rungs, a budget) apply to every run;
they are checked before the first one, so a typo stops the scheduler at once, not a week later.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from lightspan.trainer.publishing.sidestate import read_json, write_json

INTERVALS = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 30 * 86400.0}
LEASE_S = 6 * 3600.0


def state_id(workflow: str) -> str:
    return f"trainer.{workflow}.state"  # not "<workflow>:*": never a workflow's latest set


async def try_acquire(
    store: Any, workflow: str, interval_s: float, owner: str, settle_s: float = 0.5
) -> tuple[bool, str]:
    """Take the lease if the workflow is due and nobody holds it; ``(ok, why)``."""
    now = time.time()
    st = await read_json(store, state_id(workflow)) or {}
    if st.get("lease_owner") and st.get("lease_until", 0) > now and st["lease_owner"] != owner:
        return False, f"another scheduler ({st['lease_owner']}) is training {workflow}"
    last = st.get("last_run_end")
    if last is not None and now - last < interval_s:
        return False, f"not due: last run {(now - last) / 3600:.1f} h ago"
    await write_json(
        store, state_id(workflow), {**st, "lease_owner": owner, "lease_until": now + LEASE_S}
    )
    await asyncio.sleep(settle_s)
    st2 = await read_json(store, state_id(workflow)) or {}
    if st2.get("lease_owner") != owner:
        return False, f"lost the lease to {st2.get('lease_owner')}"
    return True, "due"


async def release(store: Any, workflow: str, owner: str, report: dict[str, Any] | None) -> None:
    st = await read_json(store, state_id(workflow)) or {}
    if st.get("lease_owner") == owner:
        st.update(
            lease_owner=None,
            lease_until=0,
            last_run_end=time.time(),
            last_status=(report or {}).get("status"),
            last_published=(report or {}).get("published"),
        )
        await write_json(store, state_id(workflow), st)


# Set by the scheduler itself for each run: given after ``--`` they would fight it.
OWN_OPTIONS = ("--workflow", "--tasks", "--store", "--token", "--config", "--out")


def run_options(extra: list[str]) -> list[str]:
    """``train run`` options given after ``--``, without the ``--``; stops naming an option the
    scheduler sets itself."""
    if extra[:1] == ["--"]:
        extra = extra[1:]
    for opt in extra:
        name = opt.split("=", 1)[0]
        # argparse takes an unambiguous prefix (`--ou` for `--out`): refuse those too.
        if len(name) > 2 and any(own.startswith(name) for own in OWN_OPTIONS):
            raise SystemExit(
                f"error: {name} is an option of `train schedule`: give it before `--`, "
                "not among the `train run` options"
            )
    return extra


def schedule_main(args: argparse.Namespace) -> int:
    from lightspan.config import load_config
    from lightspan.engine import load_workflow

    cfg = load_config(args.config)
    opt = cfg.agentLightning.optimization
    if not opt.enabled:
        print("optimization.enabled is false: nothing scheduled (set it in the configuration)")
        return 1
    store_url = args.store or cfg.agentLightning.store.address
    interval = INTERVALS[opt.training_interval.value]
    owner = f"sched-{uuid.uuid4().hex[:8]}"
    name = load_workflow(args.workflow, prices=cfg.llm.prices).name

    from lightspan.trainer.cli import _cmd_run, open_store, parse_run_args

    extra = run_options(list(getattr(args, "run_options", None) or []))

    def run_argv(out: Path) -> list[str]:
        argv = ["--workflow", args.workflow, "--tasks", args.tasks, "--store", store_url]
        argv += ["--algorithm", opt.algorithm.value.lower(), "--out", str(out), "--publish"]
        argv += ["--seed", str(int(time.time()) % 1000)]
        if args.token:
            argv += ["--token", args.token]
        if args.config:
            argv += ["--config", args.config]
        return argv + extra  # the user's options last: they win (e.g. --algorithm, --seed)

    parse_run_args(run_argv(Path(args.out)))  # a bad option exits here, naming it

    async def gate() -> tuple[bool, str]:
        async with open_store(store_url, args.token) as store:
            return await try_acquire(store, name, interval, owner)

    async def done(report: dict[str, Any] | None) -> None:
        async with open_store(store_url, args.token) as store:
            await release(store, name, owner, report)

    while True:
        ok, why = asyncio.run(gate())
        print(f"{name}: {why}")
        if ok:
            out = Path(args.out) / time.strftime("%Y%m%dT%H%M%S")
            run_args = parse_run_args(run_argv(out))
            report = None
            try:
                _cmd_run(run_args)
                import json

                p = out / "report.json"
                report = json.loads(p.read_text()) if p.exists() else None
            finally:
                asyncio.run(done(report))
        if args.once:
            return 0
        time.sleep(min(interval, 3600.0))
