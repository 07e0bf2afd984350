"""The coordinating etcd with its RBAC on, set up by the commands docs/daemon.md gives.

The first block of "Three daemons on three machines" runs as written (the address replaced by a
real single-member etcd's); then two daemons on two "machines" (own state directory, own host
name, ``unshare -u``) take the settings of the second block from the environment alone (no
``--lock`` flag) and split four stacks; a person on a third machine is refused by name; the
third block's ``etcdctl`` shows who leads; nobody without infra's user reads ``/infra/``; a wrong
password stops a daemon's start naming the user, never the password; and when the coordinating
etcd restarts (every login token void), the daemons log in again and keep the stacks led.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.daemon.conftest import CoordEtcd, Harness

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "daemon.md"
HEADING = "### Three daemons on three machines"
DOC_ADDRESS = "10.0.0.5:2379"


def doc_blocks() -> list[list[str]]:
    """The fenced blocks of the section, in order."""
    text = DOC.read_text()
    section = text[text.index(HEADING):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return [block.strip("\n").splitlines() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def etcdctl(coord: CoordEtcd, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("etcdctl")
    assert binary, "etcdctl is missing: install Debian's etcd-client"
    env = {"PATH": os.environ["PATH"], "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": f"http://{coord.host}:{coord.port}"}
    return subprocess.run([binary, *(("--user", user) if user else ()), *args], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def leaders(coord: CoordEtcd, root: str) -> dict[str, dict[str, object]]:
    out = etcdctl(coord, "get", "--prefix", "/infra/leader/", user=root)
    lines = out.stdout.splitlines()
    return {k.removeprefix("/infra/leader/"): json.loads(v) for k, v in zip(lines[::2], lines[1::2], strict=True)}


def gateway(coord: CoordEtcd, path: str, body: dict[str, str], token: str | None = None) -> tuple[int, Any]:
    """One call to the etcd's JSON gateway: (HTTP status, JSON body)."""
    req = urllib.request.Request(f"http://{coord.host}:{coord.port}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": token} if token else {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(what: str, pred, timeout: float = 60.0, every: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(every)


def test_daemons_coordinate_through_an_etcd_with_rbac_set_up_as_documented(
    harness: Harness, coord_etcd: CoordEtcd, tmp_path: Path
) -> None:
    setup, exports, show = doc_blocks()
    admin = tmp_path / "admin"
    admin.mkdir()
    script = "\n".join(setup).replace(f"http://{DOC_ADDRESS}", f"http://{coord_etcd.host}:{coord_etcd.port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=admin, capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"]}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Authentication Enabled" in done.stdout
    root = f"root:{(admin / 'root.password').read_text().strip()}"
    password = admin / "infra.password"

    # Nobody without a user reads /infra/; a user without infra's role neither.
    anonymous = etcdctl(coord_etcd, "get", "--prefix", "/infra/")
    assert anonymous.returncode != 0 and "user name is empty" in anonymous.stderr, anonymous.stderr
    assert etcdctl(coord_etcd, "user", "add", "other", "--new-user-password", "other-pw", user=root).returncode == 0

    # The second block's settings, from the environment only (its names, this test's values).
    names = re.findall(r"\b(INFRA_[A-Z_]+)=", "\n".join(exports))
    assert names == ["INFRA_COORDINATION", "INFRA_COORDINATION_USER", "INFRA_COORDINATION_PASSWORD_FILE",
                     "INFRA_SECRETS_KEY"], names
    values = [f"etcd://{coord_etcd.host}:{coord_etcd.port}", "infra", str(password), harness.env["INFRA_SECRETS_KEY"]]

    def machine(m: str) -> dict[str, str]:
        return {**dict(zip(names, values, strict=True)), "INFRA_STATE_DIR": str(tmp_path / f"machine-{m}")}

    files = [harness.stack_file(f"r{i}", size=1, provider="memory") for i in range(4)]
    a = harness.daemon(*files, interval=1.0, extra=("--lock-ttl", "3"), env=machine("a"), host="machine-a")
    b = harness.daemon(*files, interval=1.0, extra=("--lock-ttl", "3"), env=machine("b"), host="machine-b")
    wait_for("two stacks led from each machine", lambda: sorted(Counter(
        str(v["host"]) for v in leaders(coord_etcd, root).values()).items()) == [("machine-a", 2), ("machine-b", 2)])
    assert etcdctl(coord_etcd, "get", "--prefix", "/infra/", user="other:other-pw").returncode != 0

    # The third block: infra's user sees who leads.
    (line,) = show
    shown = subprocess.run(["bash", "-c", line], cwd=admin, capture_output=True, text=True, timeout=30, check=False,
                           env={"PATH": os.environ["PATH"], "ETCDCTL_ENDPOINTS": f"http://{coord_etcd.host}:{coord_etcd.port}"})
    assert shown.returncode == 0, shown.stderr
    assert sorted(json.loads(v)["host"] for v in shown.stdout.splitlines()) == ["machine-a"] * 2 + ["machine-b"] * 2

    # A person on a third machine gets the same lock, through the same login.
    person = {**harness.env, **machine("c")}
    refused = subprocess.run([shutil.which("infra") or "infra", "apply", str(files[0]), "--yes"], env=person,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "being changed elsewhere" in refused.stderr, refused.stderr
    assert "machine-a" in refused.stderr or "machine-b" in refused.stderr

    # A wrong password: the daemon does not start, and says whose login failed, not the password.
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-4711\n")
    bad = subprocess.run([shutil.which("infra") or "infra", "daemon", str(files[0]), "--metrics-addr", "none"],
                         env={**person, "INFRA_COORDINATION_PASSWORD_FILE": str(wrong)}, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1, bad.stderr
    assert "refused the login of user 'infra'" in bad.stderr and "4711" not in bad.stderr, bad.stderr

    # The coordinating etcd restarts: every token is void; the daemons log in again and lead on.
    marks = {d.pid: len(d.events()) for d in (a, b)}
    before = {stack: v["id"] for stack, v in leaders(coord_etcd, root).items()}
    coord_etcd.proc.kill()
    coord_etcd.proc.wait(timeout=10)
    with open(tmp_path / "coord-etcd-2.log", "wb") as log:  # now with tokens that die after 1 s unused
        coord_etcd.proc = subprocess.Popen([*coord_etcd.proc.args, "--auth-token-ttl", "1"], stdout=log,
                                           stderr=subprocess.STDOUT)
    wait_for("the coordinating etcd back", coord_etcd.healthy, timeout=30)
    wait_for("all four stacks led again after the restart",
             lambda: len(leaders(coord_etcd, root)) == 4 and all(d.proc.poll() is None for d in (a, b)), timeout=60)
    back = time.monotonic()
    for d in (a, b):  # passes well after a TTL: each daemon's keepalives went through with a new token
        d.wait_for(lambda e: e.get("event") == "pass" and time.monotonic() - back > 4, after=marks[d.pid],
                   timeout=30, what="a pass a TTL after the restart")
        assert not [e for e in d.events()[marks[d.pid]:] if "leadership lost" in str(e.get("msg"))], d.tail()
    assert {stack: v["id"] for stack, v in leaders(coord_etcd, root).items()} == before  # nothing moved
    for d in (a, b):
        assert "Traceback" not in d.log_path.read_text()
        assert password.read_text().strip() not in d.log_path.read_text()

    # A client whose token died (unused for longer than --auth-token-ttl) logs in again by itself.
    from reconciler.kit.coordination import etcd_client, parse_lock

    target = parse_lock(f"etcd://{coord_etcd.host}:{coord_etcd.port}", user="infra", password_file=str(password))
    assert target is not None
    client = etcd_client(target, timeout=5)
    assert client.put("/infra/test/relogin", "1")
    token = client.session._token  # type: ignore[attr-defined]
    assert token
    wait_for("the token to die", lambda: gateway(coord_etcd, "/v3/kv/range", {"key": "L2luZnJhLw=="}, token)[0] == 401,
             timeout=30, every=2.0)  # each look uses the token: look less often than it lives
    assert client.get("/infra/test/relogin") == [b"1"]  # a 401, then a new login, then the read
    assert client.session._token != token  # type: ignore[attr-defined]
