"""Membership changes of an etcd cluster: add, remove, move the leader; each retried as etcd asks.

Called by :mod:`plugins.etcd.role`'s ``before_create`` and ``before_delete`` once the safety
rules (:mod:`plugins.etcd.safety`) have allowed the change. etcd refuses a reconfiguration with
"unhealthy cluster" until its members have been connected for a few seconds; such refusals are
retried for ``reconfig_wait`` seconds, then handed to the executor as a transient error. Every
other refusal is a :class:`~reconciler.core.errors.RoleError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from plugins.etcd.client import EtcdApiError, EtcdClient, EtcdError, EtcdUnreachable, Member, MemberList
from plugins.etcd.survey import Survey
from reconciler.core.errors import RoleError, RoleTransientError

T = TypeVar("T")

#: How long a single probe waits (health checks, "does this stale member still answer?").
PROBE_TIMEOUT = 2.0


class Membership:
    """Membership calls through one client, retried while etcd answers "unhealthy cluster"."""

    def __init__(self, client: EtcdClient, *, reconfig_wait: float, request_timeout: float,
                 endpoint: Callable[[str], str], log: Callable[[str], None]) -> None:
        self.client = client
        self.reconfig_wait = reconfig_wait
        self.request_timeout = request_timeout
        self.endpoint = endpoint
        self.log = log

    def retry(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` while etcd answers "unhealthy cluster", up to ``reconfig_wait`` seconds."""
        deadline = time.monotonic() + self.reconfig_wait
        while True:
            try:
                return call()
            except EtcdApiError as exc:
                if not exc.unhealthy_cluster:
                    raise RoleError(f"etcd refused to {what}: {exc.message}") from None
                if time.monotonic() >= deadline:
                    raise RoleTransientError(
                        f"etcd refused to {what}: {exc.message} (its members have not all been "
                        "connected long enough; retrying)"
                    ) from None
            except EtcdUnreachable as exc:
                if time.monotonic() >= deadline:
                    raise RoleTransientError(f"could not {what}: {exc}") from None
            time.sleep(0.5)

    def add(self, endpoint: str, name: str, url: str) -> MemberList:
        """``member add`` at ``url``; an earlier attempt's add that did go through counts."""

        def call() -> MemberList:
            try:
                return self.client.member_add(endpoint, [url])[1]
            except EtcdApiError as exc:
                if exc.peer_url_exists:
                    return self.client.member_list(endpoint)
                raise

        return self.retry(f"add member {name}", call)

    def remove(self, endpoint: str, member: Member, what: str) -> None:
        """``member remove`` through ``endpoint``; a member already gone counts as removed."""

        def call() -> MemberList | None:
            try:
                return self.client.member_remove(endpoint, member.id)
            except EtcdApiError as exc:
                if exc.member_not_found:
                    return None
                raise

        self.retry(what, call)

    def answers(self, url: str) -> bool:
        """Whether anything serves etcd at ``url`` right now."""
        try:
            self.client.status(url, timeout=PROBE_TIMEOUT)
        except EtcdError:
            return False
        return True

    def move_leader_away(self, survey: Survey, target: Member) -> None:
        """Hand leadership to another healthy member so removing ``target`` costs no election."""
        leader = survey.probe_for(target)
        others = [p for p in survey.healthy if p.status is not None and p.status.member_id != target.id]
        if leader is None or leader.instance.address is None or not others:
            return
        assert others[0].status is not None and others[0].instance.address is not None
        new_leader = others[0].status.member_id
        try:
            self.client.move_leader(self.endpoint(leader.instance.address), new_leader)
        except EtcdError as exc:
            self.log(f"etcd: could not move leadership away from {target.name} ({exc.message}); removing anyway")
            return
        deadline = time.monotonic() + self.request_timeout
        while time.monotonic() < deadline:
            try:
                if self.client.status(self.endpoint(others[0].instance.address)).leader == new_leader:
                    return
            except EtcdError:
                pass
            time.sleep(0.1)
