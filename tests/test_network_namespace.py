"""The suite runs in a network namespace of its own with loopback only (where it can: root)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.environ.get("INFRA_TEST_IN_NETNS") != "1", reason="not root: no private namespace here")
def test_only_loopback_exists_and_other_networks_are_unreachable() -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]  # checked first: nothing can leave
    # A child without infra's in-process guard: the kernel itself has no route out (ENETUNREACH).
    probe = ("import errno, socket\ns = socket.socket()\ntry:\n    s.connect(('192.0.2.1', 80))\n"
             "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.strip() == "ENETUNREACH"  # 192.0.2.1: TEST-NET-1, never a real host
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname(), timeout=2).close()  # loopback still works
