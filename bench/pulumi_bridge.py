"""Pulumi bridge benchmark: plugin start-up, and a no-op plan through the bridge beside memory.

Run from the repository root::

    python bench/pulumi_bridge.py            # about 20 s
    python bench/pulumi_bridge.py --quick    # a few seconds: checks the bench itself works

The plugin is ``tests/pulumi/fakecloud.py`` (the tests' Pulumi resource provider plugin: a real
plugin process over the real gRPC protocol, no cloud behind it), so the figures are the bridge's
own cost: process start, CheckConfig/Configure, and the calls of a plan. Rows:

* plugin start-up — ``PulumiProvider.open`` and its first call (start, port, Configure),
  best of 5, each with a fresh plugin process;
* no-op plan of N members (100) — ``Engine.plan()`` over N instances created by an apply, best of
  3, with the plugin calls it made (the target: one list ``Invoke`` per plan, nothing else);
* the same plan on the in-process ``memory`` provider, and the ratio.

Figures only; the bench never passes or fails on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.core.stack import Group, Stack  # noqa: E402
from reconciler.engine.engine import Engine  # noqa: E402
from tests.pulumi.conftest import BIN, TOKEN, bridge_config  # noqa: E402


def engine(provider: str, config: dict[str, object], size: int, root: Path) -> Engine:
    stack = Stack(name="bench-bridge", provider=provider, provider_config=config,  # type: ignore[arg-type]
                  groups=(Group(name="web", size=size, config={"command": ["true"]}, machine_type="cx22"),))
    return Engine.open(stack, root=root)


def best_plan(e: Engine, rounds: int) -> tuple[float, int]:
    best = float("inf")
    observed = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        planned = e.plan()
        best = min(best, time.perf_counter() - t0)
        if not planned.empty:
            raise SystemExit(f"the plan is not empty: {planned.plan.counts()}")
        observed = planned.plan.observed
    return best, observed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int, default=None)
    args = ap.parse_args()
    size = args.members or (20 if args.quick else 100)
    starts, rounds = (2, 2) if args.quick else (5, 3)
    with tempfile.TemporaryDirectory(prefix="infra-bench-pulumi-") as tmp:
        root = Path(tmp)
        os.environ.update({"FAKECLOUD_STATE": str(root / "cloud.json"), "FAKECLOUD_PYTHON": sys.executable,
                           "FAKECLOUD_API_TOKEN": TOKEN, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
        from providers.pulumi import PulumiProvider

        times = []
        for _ in range(starts):
            t0 = time.perf_counter()
            p = PulumiProvider.open(bridge_config(), stack="bench-bridge", state_dir=root)
            p.plugin_info()
            times.append(time.perf_counter() - t0)
            p.close()
        print(f"infra pulumi bridge bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
              f"plugin: tests/pulumi/fakecloud.py")
        print(f"  plugin start-up (open + Configure + first call)   {min(times) * 1000:8.0f} ms   best of {starts}")

        bridge = engine("pulumi", bridge_config(), size, root)
        result = bridge.apply(bridge.plan())
        if not result.ok:
            raise SystemExit(f"the apply failed: {result.failed[:2]}")
        provider = bridge.provider
        assert isinstance(provider, PulumiProvider)
        provider.calls.clear()
        seconds, observed = best_plan(bridge, rounds)
        calls = {k: v // rounds for k, v in provider.calls.items()}
        print(f"  no-op plan, {observed} members, bridge              {seconds * 1000:8.1f} ms   "
              f"plugin calls per plan: {calls}   target: Invoke=1")
        bridge.apply(bridge.plan(destroy=True))
        bridge.close()

        memory = engine("memory", {"world": uuid.uuid4().hex}, size, root)
        memory.apply(memory.plan())
        mem_seconds, _ = best_plan(memory, rounds)
        print(f"  no-op plan, {size} members, memory provider       {mem_seconds * 1000:8.1f} ms   "
              f"bridge/memory {seconds / mem_seconds:.1f}x")
        memory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
