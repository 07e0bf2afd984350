"""The ``prometheus`` role: a Prometheus server watching other groups of the same stack.

Registered under the ``infra.plugins`` entry point ``prometheus``; the engine calls its hooks
(see :mod:`reconciler.kit.role`). A stack declares, for example::

    Group(name="prometheus", size=1, role="prometheus", config={"watch": ["etcd"]})

Each member runs one service, the ``prometheus`` binary (LinuxKit image ``prom/prometheus``),
reading ``prometheus/prometheus.yml`` below its config directory. That file has one scrape job
per watched group and metrics endpoint, plus one for the Prometheus group itself. The watched
role says where its members serve metrics (``ctx.metrics_of``, so this role imports no other
role) and the provider says how Prometheus discovers them (``ctx.provider.discovery``: a file
the local provider rewrites on every pass, or the cloud's own discovery), so scaling a watched
group changes the targets without touching Prometheus's configuration or restarting it.

Endpoints that require mutual TLS (etcd's) are scraped with a client certificate issued for the
group by the stack's CA (:mod:`reconciler.kit.pki`); its key reaches the member as a secret file
that never appears in a plan, a log or the spec hash.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pydantic import JsonValue

from plugins.prometheus import api
from plugins.prometheus.scrape import CA_FILE, CERT_FILE, KEY_FILE, Job, job_names, render
from plugins.prometheus.settings import PrometheusConfig
from reconciler.core.errors import ConfigError, HealthTimeoutError
from reconciler.core.model import ConfigFile, Health, Instance, MemberSpec, Problem, Service, group_selector
from reconciler.kit.pki import StackCA
from reconciler.kit.role import MetricsTarget, Role, RoleContext, UpdatePolicy

#: Directory of the role's files below the member's config directory (LinuxKit ``/run/config``).
CONFIG_DIR = "prometheus"
CONFIG_FILE = f"{CONFIG_DIR}/prometheus.yml"
#: How long ``after_create`` waits for a new member to answer ``/-/ready``.
READY_TIMEOUT = 60.0
_POLL = 0.2


class PrometheusRole(Role[PrometheusConfig]):
    """A Prometheus server scraping the groups it watches, found by service discovery."""

    name = "prometheus"
    policy = UpdatePolicy.CATTLE
    config_model = PrometheusConfig

    # -- before anything changes -------------------------------------------------------------

    def validate(self, ctx: RoleContext[PrometheusConfig]) -> list[Problem]:
        """Every watched group must exist in the stack and not be this group; changes nothing.

        Problems name the bad entry (``groups[1].config.watch[0]``). A watched group whose role
        serves no metrics is a warning: there is nothing to scrape there.
        """
        cfg = ctx.config
        names = [g.name for g in ctx.stack.groups]
        here = f"groups[{names.index(ctx.group.name)}].config" if ctx.group.name in names else "config"
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, watched in enumerate(cfg.watch):
            where = f"{here}.watch[{i}]"
            if watched == ctx.group.name:
                problems.append(
                    Problem(
                        field=where,
                        message=f"group {watched!r} cannot watch itself; it always scrapes its own "
                        f"members (job {watched!r})",
                    )
                )
            elif watched not in names:
                others = ", ".join(repr(n) for n in names if n != ctx.group.name) or "none"
                problems.append(
                    Problem(
                        field=where,
                        message=f"no group named {watched!r} in stack {ctx.stack.name!r} (other groups: {others})",
                    )
                )
            elif watched in seen:
                problems.append(Problem(field=where, message=f"group {watched!r} is listed twice"))
            elif not ctx.metrics_of(watched):
                role = ctx.stack.group(watched).role
                problems.append(
                    Problem(
                        field=where,
                        message=f"group {watched!r} (role {role!r}) serves no Prometheus metrics; "
                        "nothing will be scraped there",
                        severity="warning",
                    )
                )
            seen.add(watched)
        return problems

    # -- desired members ---------------------------------------------------------------------

    def jobs(self, ctx: RoleContext[PrometheusConfig]) -> list[Job]:
        """The scrape jobs: this group itself first, then each watched group's endpoints.

        Raises ConfigError when a watched group is not in the stack. A group whose role serves no
        metrics, or an endpoint the provider offers no discovery for, gets no job (and a log line).
        """
        cfg = ctx.config
        stack = ctx.stack.name
        names = {g.name for g in ctx.stack.groups}
        wanted: list[tuple[str, list[MetricsTarget]]] = [(ctx.group.name, [MetricsTarget(port=cfg.port)])]
        for watched in cfg.watch:
            if watched not in names or watched == ctx.group.name:
                raise ConfigError(
                    f"group {ctx.group.name!r}: config.watch names {watched!r}, which is not another "
                    f"group of stack {stack!r}"
                )
            targets = ctx.metrics_of(watched)
            if not targets:
                ctx.log(f"prometheus: group {watched!r} serves no metrics; not scraping it")
            wanted.append((watched, targets))
        jobs: list[Job] = []
        for group, targets in wanted:
            for job_name, target in zip(job_names(group, targets), targets, strict=True):
                sd = ctx.provider.discovery(group_selector(stack, group), target.port)
                if sd is None:
                    ctx.log(
                        f"prometheus: provider {ctx.provider.name!r} offers no service discovery; "
                        f"group {group!r} will not be scraped"
                    )
                    continue
                jobs.append(Job(name=job_name, group=group, target=target, discovery=sd))
        return jobs

    def files(self, ctx: RoleContext[PrometheusConfig]) -> tuple[ConfigFile, ...]:
        """``prometheus.yml`` and, when a job needs mutual TLS, the CA and the client certificate."""
        cfg = ctx.config
        jobs = self.jobs(ctx)
        text = render(jobs, stack=ctx.stack.name, interval=cfg.scrape_interval, timeout=cfg.effective_scrape_timeout())
        files = [ConfigFile(path=CONFIG_FILE, content=text)]
        if any(job.target.mtls for job in jobs):
            ca = StackCA(ctx.state_dir, create=ctx.writing, store=ctx.secrets)
            issued = ca.issue(f"{self.name}-{ctx.group.name}", client=True)
            files += [
                # Runtime files, not the spec: a renewed certificate or another machine's CA view
                # must not roll Prometheus (and a read-only plan's throwaway CA changes nothing).
                ConfigFile(path=f"{CONFIG_DIR}/{CA_FILE}", content=ca.ca_cert_pem, in_spec=False),
                ConfigFile(path=f"{CONFIG_DIR}/{CERT_FILE}", content=issued.cert_pem, in_spec=False),
                ConfigFile(path=f"{CONFIG_DIR}/{KEY_FILE}", content=issued.key_pem, mode=0o600, secret=True),
            ]
        return tuple(files)

    def service(self, ctx: RoleContext[PrometheusConfig]) -> Service:
        """The ``prometheus`` service: the LinuxKit image and the host command standing in for it."""
        cfg = ctx.config
        return Service(
            name="prometheus",
            image=cfg.container_image,
            command=(
                cfg.binary,
                f"--config.file={{config}}/{CONFIG_FILE}",
                f"--web.listen-address={{address}}:{cfg.port}",
                "--storage.tsdb.path={data}/tsdb",
                f"--storage.tsdb.retention.time={cfg.retention}",
            ),
            ports=(cfg.port,),
            debian_package="prometheus",
        )

    def expand(self, ctx: RoleContext[PrometheusConfig]) -> list[MemberSpec]:
        """``size`` identical members ``<group>-<n>``. Raises ConfigError on a bad ``watch``."""
        service = self.service(ctx)
        files = self.files(ctx)
        return [
            self.member_base(ctx, i, services=(service,), files=files)
            for i in range(ctx.group.size)
        ]

    # -- health ------------------------------------------------------------------------------

    def health(self, ctx: RoleContext[PrometheusConfig], instance: Instance) -> Health:
        """``/-/ready`` answering 200 is HEALTHY. Nothing answering (refused, timeout) or 503
        (still replaying its write-ahead log) is UNKNOWN: the member is left alone. Any other
        answer means something that is not a working Prometheus holds the port: UNHEALTHY.
        """
        if not ctx.reachable(instance.address):
            return Health.UNKNOWN
        assert instance.address is not None
        try:
            return Health.HEALTHY if api.ready(instance.address, ctx.config.port) else Health.UNKNOWN
        except api.PrometheusUnreachable:
            return Health.UNKNOWN
        except api.PrometheusBadAnswer:
            return Health.UNHEALTHY

    def after_create(self, ctx: RoleContext[PrometheusConfig], member: MemberSpec, instance: Instance) -> None:
        """Wait until the new member answers ``/-/ready``; HealthTimeoutError after 60 s.

        A member ``infra`` may not reach from here (see ``RoleContext.reachable``) is not waited
        on: the gate is skipped and the log says so.
        """
        if not instance.address:
            return
        if not ctx.reachable(instance.address):
            ctx.log(f"prometheus member {member.member} at {instance.address} is outside INFRA_NETWORK_ALLOW: "
                    "readiness not checked from here")
            return
        port = ctx.config.port
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer yet"
        while True:
            try:
                if api.ready(instance.address, port):
                    return
                last = "/-/ready answered 503 (starting up)"
            except (api.PrometheusUnreachable, api.PrometheusBadAnswer) as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise HealthTimeoutError(
                    f"prometheus member {member.member!r} did not become ready within {READY_TIMEOUT:.0f} s: {last}",
                    hint="look at the instance's prometheus log for a configuration or port error",
                )
            time.sleep(_POLL)

    # -- what infra status and other roles see -----------------------------------------------

    def status(self, ctx: RoleContext[PrometheusConfig]) -> Mapping[str, JsonValue]:
        """Each target's health as Prometheus reports it (``/api/v1/targets``), per member.

        ``{"targets": [{"prometheus": "prometheus-0", "job": "etcd", "member": "etcd-0",
        "health": "up", "last_error": null, ...}], "summary": {"up": 3, "down": 0,
        "unknown": 0}, "errors": [...]}``. A member that cannot be asked is listed in
        ``errors``; this never raises for an unreachable Prometheus.
        """
        port = ctx.config.port
        rows: list[JsonValue] = []
        errors: list[JsonValue] = []
        summary: dict[str, int] = {"up": 0, "down": 0, "unknown": 0}
        for inst in sorted(ctx.instances, key=lambda i: i.member or i.name):
            who = inst.member or inst.name
            if not inst.alive or not inst.address:
                errors.append({"prometheus": who, "error": f"instance is {inst.status.value}"})
                continue
            try:
                targets = api.active_targets(inst.address, port)
            except (api.PrometheusUnreachable, api.PrometheusBadAnswer) as exc:
                errors.append({"prometheus": who, "error": str(exc)})
                continue
            for target in targets:
                summary[target.health if target.health in summary else "unknown"] += 1
                row: dict[str, JsonValue] = {"prometheus": who}
                row.update(target.as_json())
                rows.append(row)
        out: dict[str, JsonValue] = {"targets": rows, "summary": dict(summary)}
        if errors:
            out["errors"] = errors
        return out

    def links(self, ctx: RoleContext[PrometheusConfig]) -> list[tuple[str, str]]:
        """Prometheus scrapes every watched group."""
        return [(group, "scrapes") for group in ctx.config.watch]

    def metrics(self, ctx: RoleContext[PrometheusConfig]) -> list[MetricsTarget]:
        """Prometheus serves its own metrics on its web port."""
        return [MetricsTarget(port=ctx.config.port)]
