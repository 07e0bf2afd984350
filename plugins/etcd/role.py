"""The ``etcd`` role: a quorum-safe etcd cluster with mutual TLS (the heart of the stack).

Registered as the ``etcd`` entry point of ``infra.plugins``; the engine calls its hooks (see
:mod:`reconciler.kit.role`). What it guarantees, hook by hook:

``check``        size 0-7 (more is refused, for the reason etcd's FAQ gives), an even size is a
                 warning, before any provider is opened; flags are checked by
                 :mod:`plugins.etcd.config` where the group is built.
``validate``     the host's etcd binary, on the local provider.
``expand``       members ``<group>-0`` … ``<group>-(n-1)``, each at the address the provider
                 reserves for it (:func:`reconciler.kit.provider.address_for`), with a *static*
                 bootstrap configuration: ``initial-cluster`` = every desired member, state
                 ``new``. ``before_create`` adds the member's certificate, whose SAN is that
                 address (:mod:`reconciler.kit.pki`), so planning writes nothing.
``after_create``/``preflight`` turn etcd's RBAC on once the cluster is healthy (see "Who may do
                 what" below).
``health``       ``/health`` of the member over mutual TLS, and the member must be in its
                 cluster's member list. Unreachable while another member answers → unhealthy;
                 nothing answers at all (a cloud seen from outside) → unknown, left alone.
``preflight``    before every change: a majority of the member list answering (else
                 :class:`~reconciler.core.errors.QuorumLostError`: nothing is changed, the message
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

Who may do what (least privilege): RBAC is on, with one user, ``root`` (role ``root``), whose
password is a random secret of the stack (``pki/secrets/etcd-<group>-root``). The operator's
``etcdctl`` (``infra env``) is ``root`` by its certificate's name; infra itself calls etcd's gateway
with a certificate that has no name (the gateway refuses named ones once RBAC is on) and root's
token. Every other certificate of the stack CA names no etcd user, so it opens no data and no
membership change: Prometheus's (it reads ``/metrics``), each member's client-port certificate.
Peers accept only peer certificates of their cluster (``--peer-cert-allowed-cn``, see
:func:`plugins.etcd.render.peer_name`). Every instance gets new private keys, made in
``before_create`` and never stored by infra (:meth:`reconciler.kit.pki.StackCA.mint`), and a deleted
member's certificates are revoked: members created afterwards refuse them at the handshake
(``--client-crl-file``/``--peer-crl-file``), and on every member they open nothing (no user).

The hooks are thin: a :mod:`plugins.etcd.survey` of the group, a decision by the pure rules of
:mod:`plugins.etcd.safety`, then the calls of :mod:`plugins.etcd.membership`. Every etcd call
goes through :class:`plugins.etcd.client.EtcdClient` with the stack's ``infra`` client
certificate. Secrets (private keys) travel only as ``secret`` files and are never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pydantic import JsonValue

from plugins.etcd import render, safety
from plugins.etcd import survey as surveys
from plugins.etcd.client import EtcdApiError, EtcdClient, EtcdError, EtcdUnreachable
from plugins.etcd.config import EtcdConfig
from plugins.etcd.membership import PROBE_TIMEOUT, Membership
from plugins.etcd.survey import Survey, label, quorum
from reconciler.core.errors import HealthTimeoutError, RoleError, RoleTransientError
from reconciler.core.model import LABEL_GROUP, LABEL_MEMBER, LABEL_STACK, Health, Instance, MemberSpec, Problem
from reconciler.core.stack import Group
from reconciler.kit.pki import StackCA
from reconciler.kit.provider import address_for
from reconciler.kit.role import MetricsTarget, Role, RoleContext, UpdatePolicy
from reconciler.kit.secretstore import SecretStore

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
#: The operator's certificate (``infra env``): its name is etcd's root user.
CLIENT_CERT = "root"
#: infra's own certificate for etcd's gateway: no name (the identity comes from root's token).
GATEWAY_CERT = "infra-gateway"
#: How long a member's certificates are valid (it is replaced before: see the docs).
MEMBER_CERT_VALIDITY = dt.timedelta(days=365)
#: How long health() waits for one member; the engine runs the checks in parallel.
HEALTH_CHECK_TIMEOUT = PROBE_TIMEOUT
RECOVERY_HINT = safety.RECOVERY_HINT

Ctx = RoleContext[EtcdConfig]


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


def root_secret(group: str) -> str:
    """The name of the stack secret holding the password of etcd's root user of ``group``."""
    return f"etcd-{group}-root"


def stack_client(state_dir: Path, group: str, *, timeout: float = 5.0, writing: bool = False,
                 store: SecretStore | None = None) -> EtcdClient:
    """infra's own client of ``group``'s cluster: the nameless gateway certificate and root's
    token (``store``: where the stack's CA and password are shared). Used by the role, and by
    tests and benches that talk to a cluster infra made."""
    ca = StackCA(state_dir, create=writing, store=store)
    gateway = ca.issue(GATEWAY_CERT, client=True, anonymous=True)
    return EtcdClient(ca.ensure(), gateway.cert_path, gateway.key_path, timeout=timeout, user="root",
                      password=ca.secret(root_secret(group)))


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


class EtcdRole(Role[EtcdConfig]):
    """An etcd cluster, changed one member at a time without losing its quorum."""

    name = "etcd"
    policy = UpdatePolicy.QUORUM
    config_model = EtcdConfig

    # -- helpers ---------------------------------------------------------------------------------

    def _client(self, ctx: Ctx, timeout: float | None = None) -> EtcdClient:
        return stack_client(ctx.state_dir, ctx.group.name, timeout=timeout or ctx.config.request_timeout,
                            writing=ctx.writing, store=ctx.secrets)

    @staticmethod
    def _ensure_rbac(ctx: Ctx, client: EtcdClient, endpoint: str) -> None:
        """Turn RBAC on (root user with the stack's password) if it is not; a failure is logged
        and tried again at the next change (the cluster works meanwhile, less protected)."""
        if not ctx.writing:
            return
        try:
            client.enable_auth(endpoint)
        except EtcdApiError as exc:
            if "authentication failed" in exc.message:
                raise RoleError(
                    f"etcd group {ctx.group.name}: RBAC is on but root's password is not this stack's secret "
                    f"({root_secret(ctx.group.name)}): someone else set it",
                    hint="reset root's password to the stack's secret with etcdctl (user passwd root), "
                    "as the operator (infra env)") from None
            ctx.log(f"etcd: could not turn RBAC on yet ({exc.message}); infra tries again at the next change")
        except EtcdError as exc:
            ctx.log(f"etcd: could not turn RBAC on yet ({exc.message}); infra tries again at the next change")

    @staticmethod
    def _endpoint(ctx: Ctx, address: str) -> str:
        return render.client_url(ctx.config, address)

    @staticmethod
    def _token(ctx: Ctx) -> str:
        return ctx.config.cluster_token or f"{ctx.stack.name}-{ctx.group.name}"

    def _survey(self, ctx: Ctx, client: EtcdClient, *, health_timeout: float | None = None) -> Survey:
        return surveys.take(ctx.instances, client, lambda a: self._endpoint(ctx, a), ctx.reachable,
                            health_timeout=health_timeout)

    def _membership(self, ctx: Ctx, client: EtcdClient) -> Membership:
        return Membership(client, reconfig_wait=ctx.config.reconfig_wait, request_timeout=ctx.config.request_timeout,
                          endpoint=lambda a: self._endpoint(ctx, a), log=ctx.log)

    def _healthy_endpoint(self, ctx: Ctx, survey: Survey, *, avoid: str | None = None) -> str:
        """A healthy member's client URL (not at ``avoid`` when another one is healthy)."""
        healthy = sorted(survey.healthy, key=lambda p: (p.instance.address == avoid, p.instance.member or ""))
        if not healthy:
            raise RoleTransientError(f"no healthy etcd member of group {ctx.group.name!r} answers right now; retrying")
        address = healthy[0].instance.address
        assert address is not None
        return self._endpoint(ctx, address)

    # -- declaration checks ----------------------------------------------------------------------

    def check(self, group: Group, config: EtcdConfig) -> list[Problem]:
        """Size limits: more than 7 is refused (etcd's FAQ), an even size is a warning."""
        size = group.size
        if size > MAX_SIZE:
            return [Problem(field="size", message=f"{size} members is too many: {MAX_SIZE_REASON}")]
        if size and size % 2 == 0:
            tolerated = (size - 1) // 2
            return [Problem(field="size", message=EVEN_SIZE_REASON.format(size=size, tolerated=tolerated, odd=size - 1),
                            severity="warning")]
        return []

    # -- validate / expand -----------------------------------------------------------------------

    def validate(self, ctx: Ctx) -> list[Problem]:
        """The host's etcd binary, on the local provider. Never changes anything."""
        if ctx.stack.provider != "local" or not ctx.group.size:
            return []
        installed = _local_etcd_version()
        if installed is None:
            return [Problem(field="role", message="the local provider runs etcd from the host, but no 'etcd' binary "
                            "is installed (Debian/Ubuntu: apt-get install etcd-server etcd-client)")]
        if installed != ctx.config.version:
            return [Problem(field="config.version", severity="warning",
                            message=f"etcd {ctx.config.version} is configured but the host's etcd is {installed}; "
                            "the local provider runs the host's binary")]
        return []

    def expand(self, ctx: Ctx) -> list[MemberSpec]:
        """Members ``<group>-0..n-1`` with their static-bootstrap configuration.

        Certificates are added by ``before_create`` (they are runtime files, outside the spec
        hash), so planning writes nothing: the stack's CA is created by the first apply. A member
        whose address the provider cannot tell in advance gets no runtime files; ``before_create``
        then refuses to create it (etcd needs the address in its configuration and certificate).
        """
        cfg = ctx.config
        service = render.service(cfg)
        settings = render.settings_file(cfg)
        specs: list[MemberSpec] = []
        for index in range(ctx.group.size):
            base = self.member_base(ctx, index, services=(service,), files=(settings,))
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
    def _with_tls(ctx: Ctx, member: MemberSpec, *, pin_peers: bool) -> MemberSpec:
        """``member`` with the CA, its revocation list, and new keys and certificates (client port
        and peer, SAN = its address) minted for this instance only; with ``pin_peers``, its
        ``cluster.flags`` requires the cluster's peer name of every peer."""
        assert member.address is not None
        ca = StackCA(ctx.state_dir, create=ctx.writing, store=ctx.secrets)
        sans = member_sans(member.address)
        serving = ca.mint(member.member, sans=sans, server=True, client=True, validity=MEMBER_CERT_VALIDITY)
        peer_cn = render.peer_name(ctx.stack.name, ctx.group.name)
        peer = ca.mint(member.member, sans=sans, server=True, client=True, common_name=peer_cn,
                       validity=MEMBER_CERT_VALIDITY)
        files = render.tls_files(ca.ca_cert_pem, ca.crl_pem(), serving.cert_pem, serving.key_pem, peer.cert_pem,
                                 peer.key_pem)
        if pin_peers:
            cluster = next((f for f in member.files if f.path == render.CLUSTER_FILE), None)
            if cluster is not None:
                files = (*files, render.cluster_file(render.with_peer_cn(cluster.content, peer_cn)))
        return member.with_files(*files)

    def _peers_named(self, ctx: Ctx, client: EtcdClient, members: list[str]) -> bool:
        """Whether every peer URL in ``members`` presents this cluster's peer name (a cluster made
        by an earlier infra presents member names: a pinned newcomer could not talk to it)."""
        want = render.peer_name(ctx.stack.name, ctx.group.name)
        return all(client.peer_common_name(url) == want for url in members)

    # -- health ----------------------------------------------------------------------------------

    def health(self, ctx: Ctx, instance: Instance) -> Health:
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

    def _healthy_within(self, ctx: Ctx, client: EtcdClient, endpoint: str) -> bool:
        """``/health`` true now, or within a few election timeouts (a leader election in
        progress is not a sick member). Raises EtcdUnreachable when the member cannot be asked."""
        deadline = time.monotonic() + max(1.0, 3 * ctx.config.election_timeout_ms / 1000)
        while True:
            if client.health(endpoint):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # -- the gates around each change -----------------------------------------------------------

    def preflight(self, ctx: Ctx) -> None:
        """Refuse (QuorumLostError) when a majority is down; wait while members disagree.

        Quorum is lost when fewer than a majority of the member list answer at all. Raises
        RoleError when no member can be reached although instances are alive (infra never
        changes membership blind), RoleTransientError while a majority answers but is not yet
        healthy (an election), the members disagree on the member list, or no leader is elected.
        """
        if ctx.destroying or not ctx.instances:
            return
        client = self._client(ctx)
        survey = self._survey(ctx, client)
        safety.preflight(ctx.group.name, survey)
        if ctx.writing:  # a cluster made before RBAC (an earlier infra) gets it at its next change
            self._ensure_rbac(ctx, client, self._healthy_endpoint(ctx, survey))

    def before_create(self, ctx: Ctx, member: MemberSpec) -> MemberSpec:
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
            return self._with_tls(ctx, member, pin_peers=True)
        # Ask again: when this replaces an instance of the same name, the address expand saw was
        # that instance's, released by its delete (and possibly handed out since). The provider
        # reserves one now, and that is the address the member is added, certified and created at.
        address: str = member.address
        fresh = address_for(ctx.provider, member)
        if fresh is not None and fresh != address:
            ctx.log(f"etcd: {member.member} gets address {fresh} (was {address})")
            address = fresh
            member = member.model_copy(update={"address": fresh})
        cfg = ctx.config
        client = self._client(ctx)
        ops = self._membership(ctx, client)
        survey = self._survey(ctx, client)
        if not survey.reachable:
            raise safety.no_member_reachable(ctx.group.name, survey)
        endpoint = self._healthy_endpoint(ctx, survey)
        members = client.member_list(endpoint)
        url = render.peer_url(cfg, address)
        for stale in safety.stale_before_add(members, address, survey):
            if stale.started and any(ops.answers(u) for u in stale.client_urls):
                raise RoleError(
                    f"etcd member {stale.name} ({', '.join(stale.peer_urls)}) is alive but is not an "
                    f"instance of stack {ctx.stack.name!r}; infra will not remove a member it does not own",
                    hint=f"remove it yourself ('etcdctl member remove {stale.hex_id}') or stop it",
                )
            ctx.log(f"etcd: removing stale member {label(None, stale)} before adding {member.member}")
            ops.remove(endpoint, stale, f"remove stale member {stale.hex_id}")
        existing = members.by_host(address)
        if existing is not None and existing.started:
            # A started member at this address but no alive instance there: what ran there is
            # gone with its data; the new instance starts empty, so it must join as a new member.
            ctx.log(f"etcd: removing {label(None, existing)}, whose instance is gone, before adding it again")
            ops.remove(endpoint, existing, f"remove member {existing.hex_id}")
            existing = None
        if existing is None:
            ctx.log(f"etcd: member add {member.member} ({url})")
            members = ops.add(endpoint, member.member, url)
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
        others = [u for name, urls in peers.items() if name != member.name for u in urls]
        pin = self._peers_named(ctx, client, others)
        if not pin:
            ctx.log(f"etcd: {member.member} accepts any peer certificate of the stack: members made by an "
                    "earlier infra present no peer name yet (it is required once they are all replaced)")
        return self._with_tls(ctx, member.with_files(render.cluster_file(conf)), pin_peers=pin)

    def after_create(self, ctx: Ctx, member: MemberSpec, instance: Instance) -> None:
        """Wait until the new member is healthy and started in its cluster's member list.

        Raises HealthTimeoutError after ``health_timeout`` seconds, or sooner when the provider
        reports the instance dead (its log says why). A member ``infra`` may not reach from
        where it runs (:meth:`RoleContext.reachable`) is not waited on: that is logged.
        """
        if ctx.destroying:
            return
        cfg = ctx.config
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
                        self._ensure_rbac(ctx, client, ep)
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

    def before_delete(self, ctx: Ctx, instance: Instance) -> None:
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
        ops = self._membership(ctx, client)
        survey = self._survey(ctx, client)
        if not survey.reachable:
            if not instance.alive and all(not i.alive for i in survey.instances):
                raise safety.quorum_lost(ctx.group.name, survey, None)
            raise safety.no_member_reachable(ctx.group.name, survey)
        endpoint = self._healthy_endpoint(ctx, survey, avoid=instance.address)
        members = client.member_list(endpoint)
        decision = safety.removal(survey, members, instance, group=ctx.group.name, size=ctx.group.size)
        if decision.verdict == "skip":
            ctx.log(f"etcd: {decision.reason}")
            self._revoke(ctx, instance)
            return
        if decision.verdict == "refuse":
            raise RoleError(decision.reason, hint=decision.hint)
        if decision.verdict == "wait":
            dead = self._dead_now(ctx, [survey.instance_for(m) for m in decision.waiting_on])
            if dead:
                raise RoleError(
                    f"not removing the healthy member {instance.member}: {', '.join(dead)} died "
                    "during this apply; waiting would not help",
                    hint="run 'infra apply' again: it replaces the dead member first",
                )
            raise RoleTransientError(decision.reason)
        target = members.by_host(instance.address)
        assert target is not None
        for m in decision.stale:
            ctx.log(f"etcd: removing stale member {label(None, m)} before removing {instance.member}")
            ops.remove(endpoint, m, f"remove stale member {m.hex_id}")
        if decision.move_leader:
            ops.move_leader_away(survey, target)
            endpoint = self._healthy_endpoint(ctx, self._survey(ctx, client), avoid=instance.address)
        ctx.log(f"etcd: member remove {instance.member} ({target.hex_id})")
        ops.remove(endpoint, target, f"remove member {instance.member}")
        self._revoke(ctx, instance)

    @staticmethod
    def _revoke(ctx: Ctx, instance: Instance) -> None:
        """Revoke the certificates minted for the instance (out of its cluster now): members
        created from now on refuse them. Certificates minted for a later instance of the same
        member (created after this one) are kept."""
        if instance.member is None:
            return
        before = instance.created_at + 300.0 if instance.created_at is not None else None
        ca = StackCA(ctx.state_dir, create=ctx.writing, store=ctx.secrets)
        serials = ca.revoke_member(instance.member, minted_before=before)
        if serials:
            ctx.log(f"etcd: revoked the {len(serials)} certificates of {instance.member}")

    @staticmethod
    def _dead_now(ctx: Ctx, instances: list[Instance | None]) -> list[str]:
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

    # -- read-only views -------------------------------------------------------------------------

    def status(self, ctx: Ctx) -> Mapping[str, JsonValue]:
        """Cluster id, leader and each member's health as etcd reports them."""
        if not ctx.instances:
            return {"members": []}
        survey = self._survey(ctx, self._client(ctx, timeout=HEALTH_CHECK_TIMEOUT))
        members = survey.member_list()
        if members is None:
            return {"error": "no member answers", "members": []}
        leader = survey.leader()
        rows: list[JsonValue] = []
        healthy_ids = survey.healthy_ids()
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

    def env(self, ctx: Ctx) -> dict[str, str]:
        """etcdctl's variables: v3 API, every member's client URL, the CA and the operator's
        certificate (named ``root``: etcd's root user, by its certificate)."""
        ca = StackCA(ctx.state_dir, create=ctx.writing, store=ctx.secrets)
        issued = ca.issue(CLIENT_CERT, client=True)
        endpoints = [self._endpoint(ctx, i.address) for i in ctx.instances if i.address and i.alive]
        return {
            "ETCDCTL_API": "3",
            "ETCDCTL_ENDPOINTS": ",".join(endpoints),
            "ETCDCTL_CACERT": str(ca.ensure()),
            "ETCDCTL_CERT": str(issued.cert_path),
            "ETCDCTL_KEY": str(issued.key_path),
        }

    def metrics(self, ctx: Ctx) -> list[MetricsTarget]:
        """etcd serves ``/metrics`` on its client port, behind the same mutual TLS."""
        return [MetricsTarget(port=ctx.config.client_port, scheme="https", mtls=True)]
