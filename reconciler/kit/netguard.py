"""An outbound-connection allow-list for this process: ``INFRA_NETWORK_ALLOW``.

When ``INFRA_NETWORK_ALLOW`` holds comma-separated CIDRs (the test suite sets
``127.0.0.0/8``), every TCP/UDP connection this Python process opens to an address outside them
fails at once with ``ConnectionRefusedError`` — no packet leaves. It exists so that tests against
moto or the fake Compute API, whose instances carry made-up private addresses (10.x), can never
send a health probe or an etcd call to a real network; a role simply sees the member as
unreachable. Installed by the CLI at start-up and by the test suite's conftest. Unset (the
default), nothing is patched.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

_installed = False


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    raw = os.environ.get("INFRA_NETWORK_ALLOW", "").strip()
    if not raw:
        return None
    return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]


def is_allowed(host: str) -> bool:
    """True when connecting to ``host`` (an IP or a name) is allowed by the allow-list."""
    nets = allowed_networks()
    if nets is None:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        if host == "localhost":
            return True
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return all(is_allowed(str(info[4][0])) for info in infos)
    return any(addr in net for net in nets)


def install() -> None:
    """Patch ``socket.socket.connect``/``connect_ex`` when the allow-list is set (idempotent)."""
    global _installed
    if _installed or allowed_networks() is None:
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def _check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if not is_allowed(str(address[0])):
                raise ConnectionRefusedError(
                    f"connection to {address[0]} blocked: outside INFRA_NETWORK_ALLOW"
                )

    def connect(self: socket.socket, address: Any) -> None:
        _check(self, address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address)
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    _installed = True
