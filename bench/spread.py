"""Spread benchmark: M stacks over 3 daemons coordinating through one etcd, beside one daemon alone.

Run from the repository root::

    python bench/spread.py                 # 1000 stacks, a few minutes
    python bench/spread.py --stacks 60     # about a minute: checks the bench itself works

A real single-member etcd on a free loopback address coordinates; each daemon is the installed
``infra daemon`` with ``--lock etcd://...``, ``--interval 10``, ``--lock-ttl 10``, its own
``INFRA_STATE_DIR`` (three machines), given the same M stack files (one ``command`` member each on
the in-process ``memory`` provider). Figures, read from the leader keys ``/infra/leader/<stack>``
(which name the holder's pid) and from ``psutil``:

* **spread** — seconds from the third daemon's start until every stack is led and the leaders'
  counts differ by at most one; the min and max per daemon;
* **after a kill** — ``kill -9`` of one daemon: seconds until every stack is led again by the two
  others (lease TTL 10 s, interval 10 s), and until their counts differ by one at most;
* **idle cost per daemon** — CPU (% of one core, user + system, all threads) over ``--idle``
  seconds once spread, RSS and threads per daemon; beside **one daemon holding all M** (file
  lock) measured the same way.

Figures are printed; the bench never passes or fails on time. It exits non-zero only when the
bench itself breaks (a spread that never settles). Everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]

INFRA = Path(sys.executable).parent / "infra"
MIB = 1024 * 1024
TTL = 10


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def coordinating_etcd(root: Path) -> Iterator[str]:
    host = "127.0.0.61"
    client, peer = free_port(host), free_port(host)
    proc = subprocess.Popen([shutil.which("etcd") or "etcd", "--name", "coord", "--data-dir", str(root / "coord"),
                             "--listen-client-urls", f"http://{host}:{client}",
                             "--advertise-client-urls", f"http://{host}:{client}",
                             "--listen-peer-urls", f"http://{host}:{peer}",
                             "--initial-advertise-peer-urls", f"http://{host}:{peer}",
                             "--initial-cluster", f"coord=http://{host}:{peer}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{host}:{client}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def leaders(url: str) -> dict[str, int]:
    """Stack → the pid leading it, in one range read of the leader keys."""
    prefix = b"/infra/leader/"
    body = json.dumps({"key": base64.b64encode(prefix).decode(),
                       "range_end": base64.b64encode(prefix[:-1] + b"0").decode()}).encode()
    req = urllib.request.Request(url + "/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.loads(resp.read())
    out = {}
    for kv in doc.get("kvs", []):
        stack = base64.b64decode(kv["key"])[len(prefix):].decode()
        out[stack] = int(json.loads(base64.b64decode(kv["value"]))["pid"])
    return out


def settle(url: str, m: int, pids: list[int], timeout: float) -> tuple[float, float, Counter[int]]:
    """Poll the leader keys: (seconds until every stack is led by ``pids``, seconds until their
    counts also differ by one at most, the counts)."""
    start = time.monotonic()
    counts: Counter[int] = Counter()
    all_led: float | None = None
    while time.monotonic() - start < timeout:
        led = leaders(url)
        counts = Counter(p for p in led.values() if p in pids)
        if sum(counts.values()) == m:
            all_led = all_led if all_led is not None else time.monotonic() - start
            if len(counts) == len(pids) and max(counts.values()) - min(counts.values()) <= 1:
                return all_led, time.monotonic() - start, counts
        time.sleep(0.25)
    raise SystemExit(f"bench error: not spread after {timeout:.0f}s: {dict(counts)} of {m}")


def idle(procs: list[subprocess.Popen[bytes]], seconds: float) -> list[tuple[float, float, int]]:
    """(CPU % of a core, RSS MiB, threads) per process over ``seconds``."""
    ps = [psutil.Process(p.pid) for p in procs]
    before = [p.cpu_times() for p in ps]
    time.sleep(seconds)
    out = []
    for p, b in zip(ps, before, strict=True):
        t = p.cpu_times()
        cpu = (t.user + t.system - b.user - b.system) / seconds * 100
        out.append((cpu, p.memory_info().rss / MIB, p.num_threads()))
    return out


def daemon(files: list[Path], state: Path, log: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INFRA_STATE_DIR": str(state), "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
    with open(log, "wb") as fh:
        return subprocess.Popen([str(INFRA), "daemon", *map(str, files), "--interval", "10", "--log-format", "json",
                                 "--metrics-addr", "none", *extra], env=env, stdout=fh, stderr=subprocess.STDOUT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of the idle CPU window")
    ap.add_argument("--logs", type=Path, default=None,
                    help="copy the daemons' logs (debug level) into this directory")
    args = ap.parse_args()
    m = args.stacks
    print(f"infra spread bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, {m} stacks")
    with tempfile.TemporaryDirectory(prefix="infra-spread-") as tmp:
        root = Path(tmp)
        key = root / "infra.key"
        key.write_text(base64.b64encode(os.urandom(32)).decode())
        key.chmod(0o600)
        os.environ["INFRA_SECRETS_KEY"] = str(key)
        files = []
        for i in range(m):
            path = root / f"s{i:04d}.py"
            path.write_text(f"from reconciler import Group, Stack\nstack = Stack(name='s{i:04d}', provider='memory', "
                            "groups=[Group(name='w', size=1, role='command', config={'command': ['true']})])\n")
            files.append(path)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with coordinating_etcd(root) as url:
                lock = ["--lock", "etcd://" + url.removeprefix("http://"), "--lock-ttl", str(TTL)]
                debug = ["--log-level", "debug"] if args.logs is not None else []
                for name in "abc":
                    procs.append(daemon(files, root / f"machine-{name}", root / f"{name}.log", lock + debug))
                _, took, counts = settle(url, m, [p.pid for p in procs], timeout=max(300.0, m * 0.6))
                print(f"  spread over 3 daemons: {took:6.1f} s   min {min(counts.values())} / max "
                      f"{max(counts.values())} per daemon")
                for i, (cpu, rss, threads) in enumerate(idle(procs, args.idle)):
                    print(f"  idle daemon {i + 1} of 3: CPU {cpu:5.2f} % of a core, RSS {rss:6.1f} MiB, {threads} threads")
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
                led, took, counts = settle(url, m, [p.pid for p in procs[1:]], timeout=max(300.0, m * 0.6))
                print(f"  after kill -9 of one: all led again in {led:5.1f} s, balanced in {took:5.1f} s "
                      f"(lease TTL {TTL} s, interval 10 s)   min {min(counts.values())} / max "
                      f"{max(counts.values())} per daemon")
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
            procs = [daemon(files, root / "machine-solo", root / "solo.log", [])]
            time.sleep(min(60.0, 5 + m * 0.02))  # its first passes create each stack's member
            ((cpu, rss, threads),) = idle(procs, args.idle)
            print(f"  one daemon holding all {m} (file lock): CPU {cpu:5.2f} % of a core, RSS {rss:6.1f} MiB, "
                  f"{threads} threads")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        p.kill()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in root.glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
