"""Loopback addresses and ports for local instances.

Every instance gets its own address in ``127.77.0.0/16`` (on Linux the whole of ``127.0.0.0/8``
reaches the loopback interface, no set-up needed), so every member can listen on the standard
port of its role (etcd 2379, Prometheus 9090) without colliding with its neighbours.
Allocation runs under the store's lock and skips addresses held by records and reservations,
and addresses where something already listens on one of the member's ports. Called by
:mod:`providers.local.provider`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection, Iterable

from providers.local.store import candidates
from reconciler.core.errors import PermanentError

#: How many consecutive addresses with the same busy port mean "it is busy everywhere".
_EVERYWHERE = 3


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4 and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def port_in_use(address: str, port: int) -> bool:
    """True when binding ``address:port`` fails because something holds it (a listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections lingering in TIME_WAIT do not count, listeners do.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            if exc.errno == errno.EACCES:
                raise PermanentError(
                    f"cannot use {address}:{port}: ports below 1024 need root or CAP_NET_BIND_SERVICE"
                ) from None
            raise PermanentError(f"cannot use {address}:{port}: {exc.strerror}") from None
        return False


def busy_ports(address: str, ports: Iterable[int]) -> list[int]:
    return [p for p in sorted(set(ports)) if port_in_use(address, p)]


def check_ports(address: str, ports: Iterable[int]) -> None:
    """PermanentError naming ``address:port`` when one of ``ports`` is already in use there."""
    busy = busy_ports(address, ports)
    if busy:
        where = ", ".join(f"{address}:{p}" for p in busy)
        raise PermanentError(
            f"port already in use at {where}: something else listens there",
            hint=f"find it with: ss -ltnp 'sport = :{busy[0]}'",
        )


def allocate(used: Collection[str], ports: Collection[int]) -> str:
    """The lowest free address of 127.77.0.0/16 whose ``ports`` are all free.

    An address held by a stray listener is skipped. When the same port is busy at several
    addresses in a row, something listens on it on every address (``0.0.0.0:port``): that is a
    PermanentError naming the first ``address:port``, as is running out of addresses.
    """
    streak: dict[int, int] = {}
    first: dict[int, str] = {}
    for address in candidates():
        if address in used:
            continue
        busy = busy_ports(address, ports)
        if not busy:
            return address
        streak = {p: streak.get(p, 0) + 1 for p in busy}
        first = {p: first.get(p, address) for p in busy}
        for p in busy:
            if streak[p] >= _EVERYWHERE:
                raise PermanentError(
                    f"port already in use at {first[p]}:{p} (and at every address tried: something "
                    f"listens on 0.0.0.0:{p} or on all of 127.0.0.0/8)",
                    hint=f"find it with: ss -ltnp 'sport = :{p}'",
                )
    raise PermanentError("no free address left in 127.77.0.0/16: delete some local instances")
