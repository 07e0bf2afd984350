"""How much observing a big GCE stack costs: Compute API calls and seconds to plan 1500 members.

Starts the fake Compute API (tests/gcp_fake) on 127.0.0.1, puts 1500 instances of a ``command``
stack in it (plus 500 foreign ones the label filter must skip), then runs the reconcile pass's
observation and a whole plan through the gcp provider and the engine, in this process and with
the ``infra plan`` CLI, and prints the calls the fake counted and the time taken. It never
passes or fails on time.

    python bench/gcp_observe.py [--members 1500] [--latency 0]

``--latency`` adds seconds to every fake API answer (the real API answers a 500-instance page in
a few hundred milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.core.model import stack_selector  # noqa: E402
from reconciler.engine.engine import Engine  # noqa: E402
from reconciler.engine.loader import load_stack  # noqa: E402
from tests.gcp_fake import FakeCompute  # noqa: E402

STACK_FILE = ROOT / "tests" / "gcp" / "stacks" / "web-gcp.py"
ZONES = ("us-central1-a", "us-central1-b")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1500)
    parser.add_argument("--foreign", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API answer")
    args = parser.parse_args()

    with FakeCompute(op_delay=0.01, boot_delay=0.0) as fake, tempfile.TemporaryDirectory() as state:
        fake.configure(latency=args.latency)
        os.environ.update(
            **fake.env(),
            INFRA_STATE_DIR=state,
            WEB_GCP_STACK="bench",
            WEB_GCP_SIZE=str(args.members),
        )
        engine = Engine.open(load_stack(STACK_FILE), root=Path(state))
        (desire,) = engine.desired({})
        for m in desire.members:
            fake.add_instance("my-project", ZONES[m.placement % 2], m.name, m.labels)
        for i in range(args.foreign):
            fake.add_instance("my-project", ZONES[i % 2], f"foreign-{i}", {"infra-stack": "someone-else"})
        print(f"fake Compute API at {fake.url}: {args.members} members of stack 'bench', {args.foreign} foreign VMs")

        fake.reset_calls()
        t = time.perf_counter()
        seen = engine.provider.list(stack_selector("bench"))
        listed = time.perf_counter() - t
        print(f"provider.list: {len(seen)} instances in {listed:.2f}s, calls {fake.call_counts()}")

        fake.reset_calls()
        t = time.perf_counter()
        plan = engine.plan().plan
        planned = time.perf_counter() - t
        print(
            f"engine.plan (observe + validate + expand + diff): {len(plan.changes)} changes in {planned:.2f}s, "
            f"calls {fake.call_counts()}"
        )
        engine.close()

        exe = shutil.which("infra")
        if exe:
            fake.reset_calls()
            t = time.perf_counter()
            run = subprocess.run(
                [exe, "plan", str(STACK_FILE), "--json"],
                capture_output=True,
                text=True,
                env=dict(os.environ),
                check=False,
            )
            wall = time.perf_counter() - t
            changes = len(json.loads(run.stdout)["changes"]) if run.returncode == 0 else "error"
            print(
                f"`infra plan --json` (CLI, process start and imports included): {changes} changes in "
                f"{wall:.2f}s, exit {run.returncode}, calls {fake.call_counts()}"
            )
        else:
            print("`infra` is not installed; skipped the CLI figure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
