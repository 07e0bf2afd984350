"""Suite-wide safety: no test may open a connection outside loopback.

Three layers, outermost first:

* **a private network namespace** (root only, as in CI): before any test is collected, the
  test process unshares its network namespace and brings up ``lo``; every process a test starts
  (the ``infra`` CLI, emulators, etcd, Prometheus, moto) inherits it, so even a bug cannot send a
  packet to another network: there is none. ``INFRA_TEST_NETNS=0`` turns it off (e.g. to debug
  with a tool outside the namespace);
* ``INFRA_NETWORK_ALLOW`` set here (before any test runs), which every ``infra`` CLI subprocess
  inherits, so infra itself refuses to probe anything else;
* the guard installed in this process, covering in-process calls: instances in moto and the fake
  Compute API carry made-up 10.x addresses that must never be probed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

CLONE_NEWNET = 0x40000000


def _private_network() -> None:
    if os.environ.get("INFRA_TEST_NETNS", "1") == "0" or os.environ.get("INFRA_TEST_IN_NETNS") == "1":
        return
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("ip") is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        sys.stderr.write(f"tests: no private network namespace (unshare: errno {ctypes.get_errno()})\n")
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["INFRA_TEST_IN_NETNS"] = "1"


_private_network()
os.environ.setdefault("INFRA_NETWORK_ALLOW", "127.0.0.0/8,::1/128")

from reconciler.kit import netguard  # noqa: E402

netguard.install()
