"""The ``etcd`` role: a quorum-safe etcd cluster with mutual TLS (the heart of the stack).

Registered as the ``etcd`` entry point of ``infra.plugins``; the engine calls its hooks (see
:mod:`reconciler.role`). What it guarantees, hook by hook:

``validate``     size 0-7 (more is refused, for the reason etcd's FAQ gives), an even size is a
                 warning; flags are checked by :mod:`plugins.etcd.config`.
``expand``       members ``<group>-0`` … ``<group>-(n-1)``, each at the address the provider
                 reserves for it (:func:`reconciler.provider.address_for`), with a *static*
                 bootstrap configuration: ``initial-cluster`` = every desired member, state
                 ``new``. ``before_create`` adds the member's certificate, whose SAN is that
                 address (:mod:`reconciler.pki`), so planning writes nothing.
``health``       ``/health`` of the member over mutual TLS, and the member must be in its
                 cluster's member list. Unreachable while another member answers → unhealthy;
                 nothing answers at all (a cloud seen from outside) → unknown, left alone.
``preflight``    before every change: a majority of the member list answering (else
                 :class:`~reconciler.errors.QuorumLostError`: nothing is changed, the message
                 names the recovery commands), a majority healthy, every reachable member
                 agreeing on the list and a leader elected (else wait: an election is not a
                 lost quorum).
``before_create``  ``member add`` through a healthy member *before* the instance starts; the
                 member then starts with ``initial-cluster-state: existing``. Members that match
                 no instance (left by a crashed run) are removed first. "unhealthy cluster" is
                 retried for ``reconfig_wait`` seconds, then handed to the executor as a
                 transient error (etcd wants its members connected for 5 s before a change).
``after_create`` waits until the new member answers ``/health`` and is a started member.
``before_delete``  ``member remove`` before the instance goes, after moving leadership away
                 from it. A sick member (a heal) is removed when the others form a healthy
                 majority; a healthy one (a roll, a shrink) only when every other member is
                 healthy, as Cluster API's preflight requires. The only member of a one-member
                 cluster is never replaced (that would lose every key).

Every etcd call goes through :class:`plugins.etcd.client.EtcdClient` with the stack's ``infra``
client certificate. Secrets (private keys) travel only as ``secret`` files and are never logged.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import TypeVar

from pydantic import JsonValue

from plugins.etcd import render
from plugins.etcd.client import (
    EtcdApiError,
    EtcdClient,
    EtcdError,
    EtcdUnreachable,
    Member,
    MemberList,
    Status,
)
from plugins.etcd.config import EtcdConfig
from reconciler.errors import HealthTimeoutError, QuorumLostError, RoleError, RoleTransientError
from reconciler.model import LABEL_GROUP, LABEL_MEMBER, LABEL_STACK, Health, Instance, MemberSpec, Problem
from reconciler.pki import StackCA
from reconciler.provider import address_for
from reconciler.role import MetricsTarget, Role, RoleContext, UpdatePolicy

T = TypeVar("T")

#: etcd's FAQ on cluster size ("What is maximum cluster size?").
MAX_SIZE = 7
MAX_SIZE_REASON = (
    "etcd recommends at most 7 members: every write must be replicated to a majority, so more "
    "members make writes slower, and 5 members already tolerate 2 failures, which is enough in "
    "most cases (etcd FAQ, 'What is maximum cluster size?')"
)
EVEN_SIZE_REASON = (
    "an even number of etcd members tolerates no more failures than one member fewer "
    "({size} tolerate {tolerated}, like {odd}) while needing a larger majority; use an odd size "
    "(etcd FAQ, 'Why an odd number of cluster members?')"
)
CLIENT_CERT = "infra"
#: How long health() waits for one member; the engine runs the checks in parallel.
HEALTH_CHECK_TIMEOUT = 2.0

RECOVERY_HINT = (
    "If the dead members can come back with their data directories intact, bring them back "
    "and run apply again. Otherwise recover by hand, then run 'infra apply' to grow the cluster "
    "again: (1) on a surviving member, restart etcd once with '--force-new-cluster' (it keeps its "
    "data and becomes a one-member cluster); or (2) restore a snapshot: 'etcdctl snapshot save "
    "backup.db' while a member still serves, then 'etcdctl snapshot restore backup.db "
    "--data-dir <new dir> --name <member> --initial-cluster <member>=<peer url>' and start etcd "
    "on that directory. Run 'infra status' to see which members answer."
)


def member_sans(address: str) -> list[str]:
    """The SANs of a member's certificate: its address (what clients and peers dial).

    etcd checks a *peer's* client certificate against the address the connection comes from.
    On the loopback network the kernel sends from 127.0.0.1 (or ::1) whatever loopback address
    is dialled, so a member on a loopback address also carries that source address.
    """
    sans = [address]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return sans
    if ip.is_loopback:
        sans.append("127.0.0.1" if ip.version == 4 else "::1")
    return sans


def quorum(members: int) -> int:
    """How many members a cluster of ``members`` needs healthy to agree on anything."""
    return members // 2 + 1


@dataclass
class Probe:
    """What one alive instance answered (or why it did not)."""

    instance: Instance
    status: Status | None = None
    members: MemberList | None = None
    healthy: bool = False
    error: EtcdError | None = None
    blocked: bool = False  # outside the networks infra may probe (RoleContext.reachable)

    @property
    def reachable(self) -> bool:
        return self.status is not None


@dataclass
class Survey:
    """One look at the whole group: every observed instance probed in parallel."""

    instances: list[Instance]
    probes: dict[str, Probe] = field(default_factory=dict)  # by instance id, alive instances only

    @property
    def reachable(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.reachable]

    @property
    def healthy(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.healthy]

    def member_list(self) -> MemberList | None:
        """The member list as a healthy member (else any reachable one) reports it."""
        for probes in (self.healthy, self.reachable):
            for p in probes:
                if p.members is not None:
                    return p.members
        return None

    def disagreement(self) -> str | None:
        views = {p.instance.member or p.instance.name: p.members.ids for p in self.reachable if p.members}
        if len({ids for ids in views.values()}) <= 1:
            return None
        return "; ".join(f"{m} sees {len(ids)} members" for m, ids in sorted(views.items()))

    def probe_for(self, member: Member) -> Probe | None:
        for p in self.probes.values():
            if p.instance.address and p.instance.address in member.peer_hosts:
                return p
        return None

    def instance_for(self, member: Member) -> Instance | None:
        for inst in self.instances:
            if inst.address and inst.address in member.peer_hosts:
                return inst
        return None

    def leader(self) -> int:
        for p in self.healthy:
            if p.status is not None and p.status.leader:
                return p.status.leader
        return 0


def _label(inst: Instance | None, member: Member) -> str:
    if inst is not None:
        return f"{inst.member or inst.name} ({inst.address})"
    return f"{member.name or 'unstarted member'} {member.hex_id} ({', '.join(member.peer_urls)})"


@cache
def _local_etcd_version() -> str | None:
    """The version of the host's etcd binary (what the local provider runs), if installed."""
    binary = shutil.which("etcd")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return None


class EtcdRole(Role):
    """An etcd cluster, changed one member at a time without losing its quorum."""

    name = "etcd"
    policy = UpdatePolicy.QUORUM
    config_model = EtcdConfig

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _cfg(ctx: RoleContext) -> EtcdConfig:
        cfg = ctx.config
        if isinstance(cfg, EtcdConfig):
            return cfg
        return EtcdConfig.model_validate(cfg or {})

    def _client(self, ctx: RoleContext, timeout: float | None = None) -> EtcdClient:
        ca = StackCA(ctx.state_dir)
        issued = ca.issue(CLIENT_CERT, client=True)
        return EtcdClient(
            ca.ensure(), issued.cert_path, issued.key_path, timeout=timeout or self._cfg(ctx).request_timeout
        )

    def _endpoint(self, ctx: RoleContext, address: str) -> str:
        return render.client_url(self._cfg(ctx), address)

    def _token(self, ctx: RoleContext) -> str:
        return self._cfg(ctx).cluster_token or f"{ctx.stack.name}-{ctx.group.name}"

    def _survey(self, ctx: RoleContext, client: EtcdClient, *, health_timeout: float | None = None) -> Survey:
        survey = Survey(list(ctx.instances))
        alive = [i for i in survey.instances if i.alive and i.address]

        def probe(inst: Instance) -> Probe:
            assert inst.address is not None
            ep = self._endpoint(ctx, inst.address)
            p = Probe(inst)
            if not ctx.reachable(inst.address):
                p.blocked = True
                p.error = EtcdUnreachable(ep, "not reachable from here (outside INFRA_NETWORK_ALLOW)")
                return p
            try:
                p.status = client.status(ep, timeout=health_timeout)
                p.members = client.member_list(ep)
                p.healthy = client.health(ep, timeout=health_timeout) and bool(p.status.leader)
            except EtcdError as exc:
                p.error = exc
            return p

        if alive:
            with ThreadPoolExecutor(max_workers=len(alive)) as pool:
                for p in pool.map(probe, alive):
                    survey.probes[p.instance.id] = p
        return survey

    def _retry_reconfig(self, ctx: RoleContext, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` while etcd answers "unhealthy cluster", up to ``reconfig_wait`` seconds."""
        deadline = time.monotonic() + self._cfg(ctx).reconfig_wait
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

    def _healthy_endpoint(self, ctx: RoleContext, survey: Survey, *, avoid: str | None = None) -> str:
        """A healthy member's client URL (not at ``avoid`` when another one is healthy)."""
        healthy = sorted(survey.healthy, key=lambda p: (p.instance.address == avoid, p.instance.member or ""))
        if not healthy:
            raise RoleTransientError(f"no healthy etcd member of group {ctx.group.name!r} answers right now; retrying")
        address = healthy[0].instance.address
        assert address is not None
        return self._endpoint(ctx, address)

    def _quorum_lost(self, ctx: RoleContext, survey: Survey, members: MemberList | None) -> QuorumLostError:
        group = ctx.group.name
        if members is None:
            dead = [i for i in survey.instances if not i.alive]
            lines = [f"{i.member or i.name} ({i.address}): {i.detail or i.status.value}" for i in dead]
            lines += [
                f"{p.instance.member} ({p.instance.address}): {p.error.message if p.error else 'no answer'}"
                for p in survey.probes.values()
            ]
            return QuorumLostError(
                f"etcd group {group!r} has lost its quorum: none of its {len(survey.instances)} "
                f"members answers ({'; '.join(lines)}). infra changed nothing: replacing members "
                "without a quorum would throw away the cluster's data.",
                hint=RECOVERY_HINT,
            )
        healthy_ids = {p.status.member_id for p in survey.healthy if p.status is not None}
        down = []
        for m in members.members:
            if m.id in healthy_ids:
                continue
            probe = survey.probe_for(m)
            inst = survey.instance_for(m)
            if probe is not None and probe.error is not None:
                why = probe.error.message
            elif probe is not None:
                why = "answers but is not healthy (no leader)"
            elif inst is not None:
                why = inst.detail or f"instance is {inst.status.value}"
            else:
                why = "no instance" if m.started else "added but never started"
            down.append(f"{_label(inst, m)}: {why}")
        return QuorumLostError(
            f"etcd group {group!r} has lost its quorum: {len(healthy_ids)} of its "
            f"{len(members.members)} members are healthy and {quorum(len(members.members))} are "
            f"needed. Down: {'; '.join(down)}. infra changed nothing: etcd cannot add or remove "
            "members without a majority, and replacing them would lose the cluster's data.",
            hint=RECOVERY_HINT,
        )

    def _no_member_reachable(self, ctx: RoleContext, survey: Survey) -> RoleError:
        reasons = "; ".join(
            f"{p.instance.member} ({p.instance.address}): {p.error.message if p.error else 'no answer'}"
            for p in survey.probes.values()
        )
        tls = any(isinstance(p.error, EtcdUnreachable) and p.error.tls for p in survey.probes.values())
        hint = (
            "the members do not accept this stack's certificates: was the stack's state directory (its CA) replaced?"
            if tls
            else "infra changes an existing etcd cluster only through one of its members; run it "
            "where the members' client port is reachable (e.g. inside their network)"
        )
        return RoleError(
            f"no member of etcd group {ctx.group.name!r} can be reached from here "
            f"({reasons or 'none has an address'}); infra will not change its membership blind",
            hint=hint,
        )

    # -- validate / expand -----------------------------------------------------------------------

    def validate(self, ctx: RoleContext) -> list[Problem]:
        """Size limits and the local etcd binary. Never changes anything."""
        problems: list[Problem] = []
        size = ctx.group.size
        if size > MAX_SIZE:
            problems.append(Problem(field="size", message=f"{size} members is too many: {MAX_SIZE_REASON}"))
        elif size and size % 2 == 0:
            tolerated = (size - 1) // 2
            problems.append(
                Problem(
                    field="size",
                    message=EVEN_SIZE_REASON.format(size=size, tolerated=tolerated, odd=size - 1),
                    severity="warning",
                )
            )
        if ctx.stack.provider == "local" and size:
            cfg = self._cfg(ctx)
            installed = _local_etcd_version()
            if installed is None:
                problems.append(
                    Problem(
                        field="role",
                        message="the local provider runs etcd from the host, but no 'etcd' binary is "
                        "installed (Debian/Ubuntu: apt-get install etcd-server etcd-client)",
                    )
                )
            elif installed != cfg.version:
                problems.append(
                    Problem(
                        field="config.version",
                        message=f"etcd {cfg.version} is configured but the host's etcd is {installed}; "
                        "the local provider runs the host's binary",
                        severity="warning",
                    )
                )
        return problems

    def expand(self, ctx: RoleContext) -> list[MemberSpec]:
        """Members ``<group>-0..n-1`` with their static-bootstrap configuration.

        Certificates are added by ``before_create`` (they are runtime files, outside the spec
        hash), so planning writes nothing: the stack's CA is created by the first apply. A member
        whose address the provider cannot tell in advance gets no runtime files; ``before_create``
        then refuses to create it (etcd needs the address in its configuration and certificate).
        """
        cfg = self._cfg(ctx)
        service = render.service(cfg)
        settings = render.settings_file(cfg)
        specs: list[MemberSpec] = []
        for index in range(ctx.group.size):
            base = self.member_base(ctx, index).model_copy(update={"services": (service,), "files": (settings,)})
            address = base.address or address_for(ctx.provider, base)
            specs.append(base.model_copy(update={"address": address}))
        peers = {s.name: [render.peer_url(cfg, s.address)] for s in specs if s.address}
        out: list[MemberSpec] = []
        for spec in specs:
            if spec.address is None:
                out.append(spec)
                continue
            conf = render.cluster(
                cfg, name=spec.name, address=spec.address, peers=peers, state="new", token=self._token(ctx)
            )
            out.append(spec.with_files(render.cluster_file(conf)))
        return out

    @staticmethod
    def _with_tls(ctx: RoleContext, member: MemberSpec) -> MemberSpec:
        """``member`` with the CA, its certificate (SAN = its address) and its key (secret)."""
        assert member.address is not None
        ca = StackCA(ctx.state_dir)
        issued = ca.issue(member.member, sans=member_sans(member.address), server=True, client=True)
        return member.with_files(*render.tls_files(ca.ca_cert_pem, issued.cert_pem, issued.key_pem))

    # -- health ----------------------------------------------------------------------------------

    def health(self, ctx: RoleContext, instance: Instance) -> Health:
        """HEALTHY when the member answers ``/health`` and is a started member of its cluster.

        UNHEALTHY when it answers unhealthy, is not in the member list, or cannot be reached
        while another member of the group can. UNKNOWN when no member can be reached at all
        (e.g. cloud instances seen from outside their network) or it has no address yet.
        """
        if instance.address is None or not ctx.reachable(instance.address):
            return Health.UNKNOWN
        client = self._client(ctx, timeout=HEALTH_CHECK_TIMEOUT)
        ep = self._endpoint(ctx, instance.address)
        try:
            if not self._healthy_within(ctx, client, ep):
                return Health.UNHEALTHY
            members = client.member_list(ep)
        except EtcdUnreachable:
            others = [
                i for i in ctx.instances if i.id != instance.id and i.alive and i.address and ctx.reachable(i.address)
            ]
            for other in others:
                assert other.address is not None
                try:
                    client.status(self._endpoint(ctx, other.address))
                    return Health.UNHEALTHY
                except EtcdError:
                    continue
            return Health.UNKNOWN
        except EtcdApiError:
            return Health.UNHEALTHY
        member = members.by_host(instance.address)
        if member is None or not member.started:
            return Health.UNHEALTHY
        return Health.HEALTHY

    def _healthy_within(self, ctx: RoleContext, client: EtcdClient, endpoint: str) -> bool:
        """``/health`` true now, or within a few election timeouts (a leader election in
        progress is not a sick member). Raises EtcdUnreachable when the member cannot be asked."""
        deadline = time.monotonic() + max(1.0, 3 * self._cfg(ctx).election_timeout_ms / 1000)
        while True:
            if client.health(endpoint):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # -- the gates around each change -----------------------------------------------------------

    def preflight(self, ctx: RoleContext) -> None:
        """Refuse (QuorumLostError) when a majority is down; wait while members disagree.

        Quorum is lost when fewer than a majority of the member list answer at all. Raises
        RoleError when no member can be reached although instances are alive (infra never
        changes membership blind), RoleTransientError while a majority answers but is not yet
        healthy (an election), the members disagree on the member list, or no leader is elected.
        """
        if ctx.destroying or not ctx.instances:
            return
        survey = self._survey(ctx, self._client(ctx))
        if not survey.reachable:
            if any(p.blocked for p in survey.probes.values()):
                raise self._no_member_reachable(ctx, survey)
            if not survey.probes:  # every instance dead (or none has an address)
                if any(i.address for i in survey.instances):
                    raise self._quorum_lost(ctx, survey, None)
                raise self._no_member_reachable(ctx, survey)
            if all(isinstance(p.error, EtcdUnreachable) and not p.error.tls for p in survey.probes.values()) and any(
                not i.alive for i in survey.instances
            ):
                raise self._quorum_lost(ctx, survey, None)
            raise self._no_member_reachable(ctx, survey)
        members = survey.member_list()
        assert members is not None
        healthy = {p.status.member_id for p in survey.healthy if p.status is not None} & members.ids
        answering = {p.status.member_id for p in survey.reachable if p.status is not None} & members.ids
        need = quorum(len(members.members))
        if len(answering) < need:
            raise self._quorum_lost(ctx, survey, members)
        if len(healthy) < need:
            # A majority of the processes answer but not a majority is healthy: a leader
            # election is under way (e.g. the leader was just killed). Wait; do not alarm.
            raise RoleTransientError(
                f"only {len(healthy)} of {len(members.members)} etcd members are healthy ({need} needed) "
                f"while {len(answering)} answer: a leader election is probably under way; waiting"
            )
        disagreement = survey.disagreement()
        if disagreement is not None:
            raise RoleTransientError(f"etcd members disagree on the member list ({disagreement}); waiting")
        if not survey.leader():
            raise RoleTransientError(f"etcd group {ctx.group.name!r} has no leader yet; waiting")

    def before_create(self, ctx: RoleContext, member: MemberSpec) -> MemberSpec:
        """``member add`` the new member through a healthy one; returns it with state ``existing``.

        Always adds the member's TLS files (CA, certificate, secret key). During a bootstrap
        that is all (static ``initial-cluster``). Raises
        RoleError when the provider gave no address (etcd needs it before start), or when a
        member unknown to this stack is alive in the cluster; RoleTransientError while etcd
        answers "unhealthy cluster" or no healthy member answers. If it raises, nothing was
        created (a member added but not started is cleaned up by the next attempt).
        """
        if ctx.destroying:
            return member
        if member.address is None:
            raise RoleError(
                f"provider {ctx.stack.provider!r} cannot tell the address of {member.member} before "
                "creating it, and etcd needs that address in its configuration and certificate "
                "(static bootstrap and 'member add' both name it)",
                hint="use a provider that reserves addresses (address_for), e.g. fixed private IPs",
            )
        if ctx.bootstrapping:
            return self._with_tls(ctx, member)
        # Ask again: when this replaces an instance of the same name, the address expand saw was
        # that instance's, released by its delete (and possibly handed out since). The provider
        # reserves one now, and that is the address the member is added, certified and created at.
        address: str = member.address
        fresh = address_for(ctx.provider, member)
        if fresh is not None and fresh != address:
            ctx.log(f"etcd: {member.member} gets address {fresh} (was {address})")
            address = fresh
            member = member.model_copy(update={"address": fresh})
        cfg = self._cfg(ctx)
        client = self._client(ctx)
        survey = self._survey(ctx, client)
        if not survey.reachable:
            raise self._no_member_reachable(ctx, survey)
        endpoint = self._healthy_endpoint(ctx, survey)
        members = client.member_list(endpoint)
        url = render.peer_url(cfg, address)
        # Members that match no alive instance of this stack: left by a crashed run (added but
        # never started) or by an instance deleted behind our back. Remove them first, so the
        # cluster's majority is counted over members that can vote.
        alive_hosts = {i.address for i in survey.instances if i.alive and i.address}
        for stale in members.members:
            if address in stale.peer_hosts or stale.peer_hosts & alive_hosts:
                continue
            if stale.started and any(self._answers(client, u) for u in stale.client_urls):
                raise RoleError(
                    f"etcd member {stale.name} ({', '.join(stale.peer_urls)}) is alive but is not an "
                    f"instance of stack {ctx.stack.name!r}; infra will not remove a member it does not own",
                    hint=f"remove it yourself ('etcdctl member remove {stale.hex_id}') or stop it",
                )
            ctx.log(f"etcd: removing stale member {_label(None, stale)} before adding {member.member}")
            self._remove(ctx, client, endpoint, stale, f"remove stale member {stale.hex_id}")
        existing = members.by_host(address)
        if existing is not None and existing.started:
            # A started member at this address but no alive instance there: what ran there is
            # gone with its data; the new instance starts empty, so it must join as a new member.
            ctx.log(f"etcd: removing {_label(None, existing)}, whose instance is gone, before adding it again")
            self._remove(ctx, client, endpoint, existing, f"remove member {existing.hex_id}")
            existing = None

        def add() -> MemberList:
            try:
                return client.member_add(endpoint, [url])[1]
            except EtcdApiError as exc:
                if exc.peer_url_exists:  # an earlier attempt's add did go through
                    return client.member_list(endpoint)
                raise

        if existing is None:
            ctx.log(f"etcd: member add {member.member} ({url})")
            members = self._retry_reconfig(ctx, f"add member {member.member}", add)
        else:
            members = client.member_list(endpoint)
        peers: dict[str, list[str]] = {}
        for m in members.members:
            if address in m.peer_hosts:
                peers[member.name] = [url]
            elif m.started:
                peers[m.name] = list(m.peer_urls)
        conf = render.cluster(
            cfg, name=member.name, address=address, peers=peers, state="existing", token=self._token(ctx)
        )
        return self._with_tls(ctx, member.with_files(render.cluster_file(conf)))

    def _remove(self, ctx: RoleContext, client: EtcdClient, endpoint: str, member: Member, what: str) -> None:
        """``member remove`` through ``endpoint``; a member already gone counts as removed."""

        def call() -> MemberList | None:
            try:
                return client.member_remove(endpoint, member.id)
            except EtcdApiError as exc:
                if exc.member_not_found:
                    return None
                raise

        self._retry_reconfig(ctx, what, call)

    @staticmethod
    def _answers(client: EtcdClient, url: str) -> bool:
        try:
            client.status(url, timeout=HEALTH_CHECK_TIMEOUT)
        except EtcdError:
            return False
        return True

    def after_create(self, ctx: RoleContext, member: MemberSpec, instance: Instance) -> None:
        """Wait until the new member is healthy and started in its cluster's member list.

        Raises HealthTimeoutError after ``health_timeout`` seconds, or sooner when the provider
        reports the instance dead (its log says why). A member ``infra`` may not reach from
        where it runs (:meth:`RoleContext.reachable`) is not waited on: that is logged.
        """
        if ctx.destroying:
            return
        cfg = self._cfg(ctx)
        address = instance.address or member.address
        if address is None:
            raise RoleError(f"{member.member} has no address; cannot check its health")
        if not ctx.reachable(address):
            ctx.log(f"etcd: {member.member} ({address}) cannot be reached from here; not waiting for its health")
            return
        client = self._client(ctx, timeout=HEALTH_CHECK_TIMEOUT)
        ep = self._endpoint(ctx, address)
        deadline = time.monotonic() + cfg.health_timeout
        last = "no answer yet"
        next_list = time.monotonic() + 2.0
        selector = {LABEL_STACK: ctx.stack.name, LABEL_GROUP: ctx.group.name, LABEL_MEMBER: member.member}
        while True:
            try:
                if client.health(ep):
                    members = client.member_list(ep)
                    me = members.by_host(address)
                    if me is not None and me.started:
                        return
                    last = "not yet a started member of the cluster"
                else:
                    last = "answers /health with false (no leader or no quorum yet)"
            except EtcdError as exc:
                last = exc.message
            now = time.monotonic()
            if now >= deadline:
                raise HealthTimeoutError(
                    f"etcd member {member.member} ({address}) did not become healthy within "
                    f"{cfg.health_timeout:.0f}s: {last}",
                    hint="look at the member's etcd log (local provider: the instance's logs/etcd.log)",
                )
            if now >= next_list:
                next_list = now + 2.0
                for inst in ctx.provider.list(selector):
                    if inst.name == instance.name and not inst.alive:
                        raise HealthTimeoutError(
                            f"etcd member {member.member} ({address}) exited while starting: "
                            f"{inst.detail or inst.status.value} (last check: {last})",
                            hint="look at the member's etcd log (local provider: the instance's logs/etcd.log)",
                        )
            time.sleep(0.2)

    def before_delete(self, ctx: RoleContext, instance: Instance) -> None:
        """``member remove`` the instance's member, keeping a healthy majority.

        Moves leadership away first when the member leads. Does nothing when it is not a member
        (already removed) or is the last member of a group scaled to 0 (the cluster ends with
        it); refuses (RoleError) to replace the only member of a one-member cluster. A healthy
        member (a roll or a shrink) is removed only when every other member is healthy; a sick
        one (a heal) when the others still form a healthy majority. Raises RoleTransientError
        while that does not hold (the executor waits and retries), RoleError when no member can
        be reached. If it raises, the instance is not deleted.
        """
        if ctx.destroying:
            return
        if instance.address is None:
            return  # it never had an address, so it never was a member
        client = self._client(ctx)
        survey = self._survey(ctx, client)
        if not survey.reachable:
            if not instance.alive and all(not i.alive for i in survey.instances):
                raise self._quorum_lost(ctx, survey, None)
            raise self._no_member_reachable(ctx, survey)
        endpoint = self._healthy_endpoint(ctx, survey, avoid=instance.address)
        members = client.member_list(endpoint)
        target = members.by_host(instance.address)
        if target is None:
            ctx.log(f"etcd: {instance.member} is not a member any more; nothing to remove")
            return
        if len(members.members) == 1:
            if ctx.group.size > 0:
                raise RoleError(
                    f"{instance.member} is the only member of etcd group {ctx.group.name!r}: replacing it "
                    "would start an empty cluster and lose every key",
                    hint="grow the group to 3 members first (the change then rolls one member at a time), "
                    "or take a snapshot ('etcdctl snapshot save') and restore it into the new member",
                )
            ctx.log(f"etcd: {instance.member} is the last member; the cluster ends with it")
            return
        healthy = {p.status.member_id for p in survey.healthy if p.status is not None} & members.ids
        if target.id in healthy:
            # A voluntary change (a roll or a shrink, not a heal): like Cluster API's preflight,
            # every other member must be healthy first. Members added by a crashed run but never
            # started, with no instance, are leftovers: remove them rather than wait for them.
            alive_hosts = {i.address for i in survey.instances if i.alive and i.address}
            sick = [m for m in members.members if m.id != target.id and m.id not in healthy]
            for m in [m for m in sick if not m.started and not (m.peer_hosts & alive_hosts)]:
                ctx.log(f"etcd: removing stale member {_label(None, m)} before removing {instance.member}")
                self._remove(ctx, client, endpoint, m, f"remove stale member {m.hex_id}")
                sick.remove(m)
            if sick:
                names = ", ".join(_label(survey.instance_for(m), m) for m in sick)
                dead = self._dead_now(ctx, [survey.instance_for(m) for m in sick])
                if dead:
                    raise RoleError(
                        f"not removing the healthy member {instance.member}: {', '.join(dead)} died "
                        "during this apply; waiting would not help",
                        hint="run 'infra apply' again: it replaces the dead member first",
                    )
                raise RoleTransientError(
                    f"not removing the healthy member {instance.member} while {names} "
                    f"{'is' if len(sick) == 1 else 'are'} not healthy; waiting"
                )
            members = client.member_list(endpoint)
        left = len(healthy - {target.id})
        if left < quorum(len(members.members) - 1):
            raise RoleTransientError(
                f"removing {instance.member} now would leave {left} healthy of "
                f"{len(members.members) - 1} etcd members (a majority is "
                f"{quorum(len(members.members) - 1)}); waiting for the others to be healthy"
            )
        if survey.leader() == target.id:
            self._move_leader_away(ctx, client, survey, target)
            endpoint = self._healthy_endpoint(ctx, self._survey(ctx, client), avoid=instance.address)
        ctx.log(f"etcd: member remove {instance.member} ({target.hex_id})")
        self._remove(ctx, client, endpoint, target, f"remove member {instance.member}")

    @staticmethod
    def _dead_now(ctx: RoleContext, instances: list[Instance | None]) -> list[str]:
        """Which of ``instances`` the provider reports dead right now (one list call)."""
        wanted = {i.id for i in instances if i is not None}
        if not wanted:
            return []
        selector = {LABEL_STACK: ctx.stack.name, LABEL_GROUP: ctx.group.name}
        return [
            f"{i.member} ({i.detail or i.status.value})"
            for i in ctx.provider.list(selector)
            if i.id in wanted and not i.alive
        ]

    def _move_leader_away(self, ctx: RoleContext, client: EtcdClient, survey: Survey, target: Member) -> None:
        """Hand leadership to another healthy member so removing ``target`` costs no election."""
        leader = survey.probe_for(target)
        others = [p for p in survey.healthy if p.status is not None and p.status.member_id != target.id]
        if leader is None or leader.instance.address is None or not others:
            return
        assert others[0].status is not None
        new_leader = others[0].status.member_id
        try:
            client.move_leader(self._endpoint(ctx, leader.instance.address), new_leader)
        except EtcdError as exc:
            ctx.log(f"etcd: could not move leadership away from {target.name} ({exc.message}); removing anyway")
            return
        deadline = time.monotonic() + self._cfg(ctx).request_timeout
        while time.monotonic() < deadline:
            assert others[0].instance.address is not None
            try:
                if client.status(self._endpoint(ctx, others[0].instance.address)).leader == new_leader:
                    return
            except EtcdError:
                pass
            time.sleep(0.1)

    # -- read-only views -------------------------------------------------------------------------

    def status(self, ctx: RoleContext) -> Mapping[str, JsonValue]:
        """Cluster id, leader and each member's health as etcd reports them."""
        if not ctx.instances:
            return {"members": []}
        survey = self._survey(ctx, self._client(ctx, timeout=HEALTH_CHECK_TIMEOUT))
        members = survey.member_list()
        if members is None:
            return {"error": "no member answers", "members": []}
        leader = survey.leader()
        rows: list[JsonValue] = []
        healthy_ids = {p.status.member_id for p in survey.healthy if p.status is not None}
        leader_member: str | None = None
        for m in sorted(members.members, key=lambda m: m.name):
            inst = survey.instance_for(m)
            logical = inst.member if inst is not None else None
            if m.id == leader:
                leader_member = logical or m.name
            rows.append(
                {
                    "member": logical,
                    "id": m.hex_id,
                    "name": m.name or None,
                    "peer_urls": list(m.peer_urls),
                    "client_urls": list(m.client_urls),
                    "started": m.started,
                    "healthy": m.id in healthy_ids,
                    "leader": m.id == leader,
                }
            )
        return {
            "cluster_id": f"{members.cluster_id:x}",
            "leader": leader_member,
            "leader_id": f"{leader:x}" if leader else None,
            "quorum": quorum(len(members.members)),
            "healthy": len(healthy_ids & members.ids),
            "members": rows,
        }

    def env(self, ctx: RoleContext) -> dict[str, str]:
        """etcdctl's variables: v3 API, every member's client URL, the CA and infra's client cert."""
        ca = StackCA(ctx.state_dir)
        issued = ca.issue(CLIENT_CERT, client=True)
        endpoints = [self._endpoint(ctx, i.address) for i in ctx.instances if i.address and i.alive]
        return {
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": ",".join(endpoints),
            "ETCDCTL_CACERT": str(ca.ensure()),
            "ETCDCTL_CERT": str(issued.cert_path),
            "ETCDCTL_KEY": str(issued.key_path),
        }

    def metrics(self, ctx: RoleContext) -> list[MetricsTarget]:
        """etcd serves ``/metrics`` on its client port, behind the same mutual TLS."""
        return [MetricsTarget(port=self._cfg(ctx).client_port, scheme="https", mtls=True)]
