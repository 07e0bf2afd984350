"""CLI start-up per provider: ``infra validate`` and a no-op ``infra plan``, beside the local provider.

    python bench/startup.py [--rounds 5]

Each figure is the wall time of the installed ``infra`` console script (a fresh process: imports,
stack file, provider, the calls), best of ``--rounds``, in throw-away state directories:

* ``local`` — ``stacks/hello-local.py``, applied first (3 web servers on loopback);
* ``gcp`` — ``tests/gcp/stacks/web-gcp.py`` against the in-repo Compute fake (3 members applied
  first; the fake answers in-process, so this is the client's own cost);
* ``aws`` — ``tests/aws/stacks/web-aws.py`` against the tests' moto server (a child process on
  127.0.0.1; 3 members applied first), so again the client's own cost;
* ``pulumi`` — a 3-member stack through the bridge to the tests' fakecloud plugin;
* ``memory`` — a 3-member stack (nothing persists between processes: its plan creates 3, so it is
  the floor of a CLI call).

The goal (issue 13): a CLI call that loads the gcp provider within 1.5x of one that loads the
local provider. Figures only; never passes or fails on time.
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

from tests.aws import moto_server  # noqa: E402

TARGET = 1.5


def infra_cmd() -> list[str]:
    exe = shutil.which("infra")
    return [exe] if exe else [sys.executable, "-m", "reconciler.cli"]


def timed(env: dict[str, str], *args: str, rounds: int, ok: tuple[int, ...] = (0,)) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.run([*infra_cmd(), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
        if proc.returncode not in ok:
            raise SystemExit(f"infra {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="infra-bench-startup-") as tmp:
        root = Path(tmp)
        base = {**os.environ, "NO_COLOR": "1", "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}

        local = {**base, "INFRA_STATE_DIR": str(root / "local")}
        hello = "stacks/hello-local.py"
        subprocess.run([*infra_cmd(), "apply", hello, "--yes"], env=local, cwd=ROOT, check=True, capture_output=True)
        try:
            rows["local"] = (timed(local, "validate", hello, rounds=args.rounds),
                             timed(local, "plan", hello, "--detailed-exitcode", rounds=args.rounds))
        finally:
            subprocess.run([*infra_cmd(), "destroy", hello, "--yes"], env=local, cwd=ROOT, capture_output=True)

        from tests.gcp_fake import FakeCompute

        with FakeCompute() as fake:
            fake.add_image("my-project", "infra-etcd-1", family="infra-etcd")
            gcp = {**base, "INFRA_STATE_DIR": str(root / "gcp"), **fake.env(),
                   "WEB_GCP_STACK": "startup"}
            web = "tests/gcp/stacks/web-gcp.py"
            subprocess.run([*infra_cmd(), "apply", web, "--yes"], env=gcp, cwd=ROOT, check=True, capture_output=True)
            rows["gcp"] = (timed(gcp, "validate", web, rounds=args.rounds),
                           timed(gcp, "plan", web, "--detailed-exitcode", rounds=args.rounds))

        with moto_server.running() as exports:
            aws = {**base, **exports, "INFRA_STATE_DIR": str(root / "aws"), "WEB_AWS_STACK": "startup",
                   "WEB_AWS_SUBNETS": exports["INFRA_AWS_SUBNETS"],
                   "WEB_AWS_SECURITY_GROUPS": exports["INFRA_AWS_SECURITY_GROUPS"]}
            web = "tests/aws/stacks/web-aws.py"
            subprocess.run([*infra_cmd(), "apply", web, "--yes"], env=aws, cwd=ROOT, check=True, capture_output=True)
            rows["aws"] = (timed(aws, "validate", web, rounds=args.rounds),
                           timed(aws, "plan", web, "--detailed-exitcode", rounds=args.rounds))

        from tests.pulumi.conftest import BIN, TOKEN, bridge_config

        stack = root / "bridge.py"
        stack.write_text("from plugins.command import Command\nfrom reconciler import Stack\n"
                         f"stack = Stack(name='startup', provider='pulumi', provider_config={json.dumps(bridge_config())},"
                         " groups=[Command(name='web', size=3, command=['true'], machine_type='cx22')])\n")
        pulumi = {**base, "INFRA_STATE_DIR": str(root / "pulumi"), "FAKECLOUD_STATE": str(root / "cloud.json"),
                  "FAKECLOUD_PYTHON": sys.executable, "FAKECLOUD_API_TOKEN": TOKEN,
                  "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run([*infra_cmd(), "apply", str(stack), "--yes"], env=pulumi, cwd=ROOT, check=True,
                       capture_output=True)
        rows["pulumi"] = (timed(pulumi, "validate", str(stack), rounds=args.rounds),
                          timed(pulumi, "plan", str(stack), "--detailed-exitcode", rounds=args.rounds))

        mem = root / "memory.py"
        mem.write_text("from plugins.command import Command\nfrom reconciler import Stack\n"
                       "stack = Stack(name='startup', provider='memory', groups=[Command(name='web', size=3, "
                       "command=['true'])])\n")
        memory = {**base, "INFRA_STATE_DIR": str(root / "memory")}
        rows["memory"] = (timed(memory, "validate", str(mem), rounds=args.rounds),
                          timed(memory, "plan", str(mem), "--detailed-exitcode", rounds=args.rounds, ok=(2,)))

    print(f"infra CLI start-up bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"best of {args.rounds}")
    lv, lp = rows["local"]
    for name, (v, p) in rows.items():
        target = f"   target ≤ {TARGET:g}x" if name == "gcp" else ""
        print(f"  {name:8s} infra validate {v * 1000:6.0f} ms ({v / lv:4.2f}x local)   "
              f"no-op infra plan {p * 1000:6.0f} ms ({p / lp:4.2f}x local){target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
