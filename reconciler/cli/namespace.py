"""``infra emulator CLOUD ... -- COMMAND``: an emulator and a command in a network namespace of their own.

Called by :func:`reconciler.cli.commands.emulator` when a command follows ``--``. It runs
``unshare -n`` (``unshare -rn``, a user namespace too, when not root) around this module's
:func:`main`, which, inside the new namespace: brings ``lo`` up, starts the emulator
(``infra emulator CLOUD --machines ...``) as a child, waits for its ``# ready``, runs COMMAND with
the emulator's exports in its environment (so ``infra apply stacks/etcd-gcp.py --yes`` just works
there), then stops the emulator (SIGTERM: every instance it booted stops) and exits with
COMMAND's status. Nothing in the namespace can reach another network, and it ends with COMMAND.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from reconciler.core.errors import ConfigError


def run_beside(cloud: str, port: int, state: Path, machines: str, vm_memory: int, command: list[str]) -> int:
    """Re-run this process's job inside a new network namespace; COMMAND's exit status."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ConfigError("running a command beside the emulator needs unshare (Debian's util-linux)")
    args = json.dumps({"cloud": cloud, "port": port, "state": str(state), "machines": machines,
                       "vm_memory": vm_memory, "command": command})
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    return subprocess.call([unshare, *flags, "--", sys.executable, "-m", "reconciler.cli.namespace", args])


def parse_exports(lines: list[str]) -> dict[str, str]:
    """``export NAME=value`` lines (values quoted as :func:`shlex.quote` writes them) → a dict."""
    out: dict[str, str] = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            words = shlex.split(value)
            out[name] = words[0] if words else ""
    return out


def main(raw: str) -> int:
    """Inside the new namespace: the emulator, then COMMAND with its exports; COMMAND's status."""
    job = json.loads(raw)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "emulator", job["cloud"], "--port", str(job["port"]),
         "--state", job["state"], "--machines", job["machines"], "--vm-memory", str(job["vm_memory"])],
        stdout=subprocess.PIPE, text=True)
    assert emulator.stdout is not None
    lines: list[str] = []
    for line in emulator.stdout:
        if line.startswith("# ready"):
            break
        lines.append(line.rstrip("\n"))
    else:
        sys.stderr.write(f"infra emulator {job['cloud']} ended before it was ready (exit {emulator.wait()})\n")
        return 1
    env = {**os.environ, **parse_exports(lines)}
    try:
        return subprocess.call(job["command"], env=env)
    finally:
        emulator.terminate()
        try:
            emulator.wait(timeout=60)
        except subprocess.TimeoutExpired:
            emulator.kill()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
