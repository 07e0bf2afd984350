"""The ``pulumi`` provider: instances of any Pulumi resource provider plugin, with no state file.

Registered as ``pulumi`` under ``infra.providers``. infra talks to the plugin exactly as the
Pulumi engine does (:mod:`providers.pulumi.plugin`), but keeps its own model: what exists is what
the plugin's *list function* returns (one ``Invoke`` per observation, never one ``Read`` per
instance), filtered on infra's ownership labels; there is no Pulumi state or stack.

* ``create``: the member's inputs are the ``inputs`` templates rendered for it
  (:func:`providers.pulumi.values.render`), passed through ``Check`` (the plugin's validation
  and defaults) then ``Create``. Idempotent by name: the list is asked first, and after an
  "already exists" answer or a lost one (the executor's retry) an instance with the member's name
  and this stack's labels is adopted instead of created twice.
* ``delete``: ``Read`` first (an empty id: already gone; empty properties ask the plugin to read
  the resource as an import), the ownership labels of what it read checked
  (:func:`reconciler.kit.ownership.require_owned`), then ``Delete`` with the read properties (what
  Terraform-bridged providers need).
* ``validate``: ``Check`` on each distinct member spec; failures are problems naming the input.
* ``discovery``: Prometheus's ``hetzner_sd`` for ``hcloud``; none otherwise.

Errors go through one table (:mod:`providers.pulumi.errors`). Secrets (``config`` values read
from the environment, outputs wrapped as secrets) never reach an Instance, a plan, a log or an
error: values are sent to the plugin and nowhere else.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2

from providers.pulumi import values
from providers.pulumi.config import PulumiConfig, parse_config
from providers.pulumi.errors import translate
from providers.pulumi.plugin import Plugin, find_plugin
from reconciler.core.errors import ConfigError, InfraError, NotFoundError, PermanentError, TransientError
from reconciler.core.model import LABEL_SPEC, LABEL_STACK, Instance, InstanceStatus, MemberSpec, Problem
from reconciler.kit.ownership import merged_labels, require_label_update, require_owned
from reconciler.kit.provider import SdConfig

_STATUS = {s.value: s for s in InstanceStatus}
_EXISTS = ("already exists", "already in use", "is already used", "uniqueness", "name is taken", "conflict")


class PulumiProvider:
    """Instances as resources of one Pulumi plugin. See the module docstring."""

    name: ClassVar[str] = "pulumi"

    def __init__(self, config: PulumiConfig, *, stack: str, binary: Path,
                 log: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.stack = stack
        self.binary = binary
        self._log = log or (lambda level, message: None)
        self.secrets = config.config_values()
        self.plugin = Plugin(binary, log=self._plugin_log, on_start=self._configure,
                             start_timeout=config.start_timeout)
        self.calls: dict[str, int] = {}
        self._valid: set[tuple[str, str]] = set()  # (group, spec hash) the plugin's Check accepted

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path | None) -> PulumiProvider:
        """Validate the settings and find the plugin; the plugin starts on the first call."""
        parsed = parse_config(config)
        binary = find_plugin(parsed.plugin, parsed.version, parsed.plugin_path)
        return cls(parsed, stack=stack, binary=binary)

    def close(self) -> None:
        self.plugin.close()

    # -- talking to the plugin --------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every configured secret value replaced by ``[secret]``."""
        for secret in sorted((str(v) for v in self.secrets.values() if v), key=len, reverse=True):
            text = text.replace(secret, "[secret]")
        return text

    def _plugin_log(self, level: str, message: str) -> None:
        """What the plugin logs (``Log`` calls and its stderr), scrubbed of the configured secrets."""
        self._log(level, f"pulumi plugin {self.config.plugin}: {self.scrub(message)}")

    def _scrubbed(self, exc: InfraError) -> InfraError:
        """``exc`` with its message and hint scrubbed of the configured secrets (a plugin's error
        details may quote its configuration)."""
        message, hint = self.scrub(exc.message), self.scrub(exc.hint) if exc.hint else exc.hint
        if message != exc.message or hint != exc.hint:
            exc.message, exc.hint, exc.args = message, hint, (message,)
        return exc

    def _configure(self, stub: Any) -> None:
        """CheckConfig, then Configure, with the plugin's configuration (right after it starts)."""
        urn = f"urn:pulumi:{self.stack}::infra::pulumi:providers:{self.config.plugin}::default"
        news = values.to_struct({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in self.secrets.items()})
        try:
            with translate(f"check the configuration of {self.config.plugin}"):
                checked = stub.CheckConfig(provider_pb2.CheckRequest(urn=urn, olds=values.to_struct({}), news=news),
                                           timeout=self.config.call_timeout)
        except InfraError as exc:
            raise self._scrubbed(exc) from None
        if checked.failures:
            f = checked.failures[0]
            field = f"provider_config.config.{f.property}"
            raise ConfigError(f"{field}: {f.reason}", field=field)
        variables = {f"{self.config.plugin}:config:{k}": (v if isinstance(v, str) else json.dumps(v))
                     for k, v in self.secrets.items()}
        try:
            with translate(f"configure {self.config.plugin}"):
                stub.Configure(provider_pb2.ConfigureRequest(variables=variables, args=checked.inputs or news,
                                                             acceptSecrets=True, acceptResources=True),
                               timeout=self.config.call_timeout)
        except InfraError as exc:
            raise self._scrubbed(exc) from None

    def _rpc(self, action: str, method: str, request: Any) -> Any:
        """One call to the plugin; a plugin that dies during it is a transient error (it restarts)."""
        self.calls[method] = self.calls.get(method, 0) + 1
        stub = self.plugin.stub()
        try:
            with translate(action):
                return getattr(stub, method)(request, timeout=self.config.call_timeout)
        except InfraError as exc:
            # A broken stream may come before the exit is visible: give the process a moment.
            cause = exc.__cause__
            broken = isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.UNAVAILABLE
            if self.plugin.died(wait=2.0 if broken else 0.0):
                raise TransientError(f"pulumi: {action}: the plugin exited during the call; it is restarted "
                                     "on the next one") from None
            raise self._scrubbed(exc) from None

    def _urn(self, name: str) -> str:
        return f"urn:pulumi:{self.stack}::infra::{self.config.resource}::{name}"


    # -- the instance model ----------------------------------------------------------------

    def _instance(self, item: Mapping[str, Any], *, fallback_name: str = "", fallback_id: str = "") -> Instance:
        f = self.config.list.fields
        raw_labels = values.dig(item, f.labels)
        labels = values.parse_tags(raw_labels) if f.labels_as == "tags" else {
            str(k): str(v) for k, v in dict(raw_labels or {}).items()}
        status_text = str(values.dig(item, f.status) or "")
        status = _STATUS.get(self.config.status.get(status_text, ""), InstanceStatus.UNKNOWN)
        address = values.text(values.dig(item, f.address)) or None
        return Instance(
            id=values.text(values.dig(item, f.id)) or fallback_id,
            name=values.text(values.dig(item, f.name)) or fallback_name,
            labels=labels, address=address, status=status,
            detail=None if status is InstanceStatus.RUNNING else f"{self.config.plugin} status {status_text or '?'}",
        )

    def _inputs(self, spec: MemberSpec) -> dict[str, Any]:
        """The resource's inputs for ``spec``; the inputs carrying the member's files (``{userdata}``:
        its private keys) are marked secret, so the plugin and its logs treat them as secrets."""
        rendered = dict(values.render(self.config.inputs, {
            "name": spec.name, "labels": spec.labels, "userdata": json.dumps(spec.userdata()),
            "image": spec.image, "machine_type": spec.machine_type, "stack": spec.stack, "group": spec.group,
            "member": spec.member}))
        for key, template in self.config.inputs.items():
            if isinstance(template, str) and "{userdata}" in template and key in rendered:
                rendered[key] = values.secret(rendered[key])
        return rendered

    # -- the provider protocol ---------------------------------------------------------------

    def list(self, selector: Mapping[str, str]) -> builtins.list[Instance]:
        """The list function's instances whose labels include ``selector`` (one Invoke)."""
        spec = self.config.list
        args = values.render(spec.args, {
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            "selector_map": dict(selector),
            "stack_tag": f"{LABEL_STACK}:{selector.get(LABEL_STACK, self.stack)}"})
        answer = self._rpc(f"list with {spec.function}", "Invoke",
                           provider_pb2.InvokeRequest(tok=spec.function, args=values.to_struct(args)))
        if answer.failures:
            f = answer.failures[0]
            raise PermanentError(f"pulumi: {spec.function} refused its arguments: {f.property}: {f.reason}")
        found = values.dig(values.unwrap(values.from_struct(getattr(answer, "return"))), spec.items)
        if not isinstance(found, builtins.list):
            raise PermanentError(f"pulumi: {spec.function} answered no list at {spec.items!r}",
                                 hint="set provider_config.list.items to the key of the list in its answer")
        wanted = selector.items()
        out = [self._instance(item) for item in found if isinstance(item, dict)]
        return [i for i in out if wanted <= i.labels.items()]  # checked again on infra's side

    def _existing(self, spec: MemberSpec) -> Instance | None:
        """This member's instance, if one exists (listed by the member's own labels: a small answer)."""
        if spec.stack != self.stack:
            return None
        selector = {k: v for k, v in spec.labels.items() if k != LABEL_SPEC}
        for inst in self.list(selector):
            if inst.name == spec.name:
                return inst
        return None

    def _named(self, name: str) -> Instance | None:
        """Any instance the list function returns with this name (ours or not)."""
        spec = self.config.list
        answer = self._rpc(f"list with {spec.function}", "Invoke", provider_pb2.InvokeRequest(
            tok=spec.function, args=values.to_struct(values.render(spec.args, {"selector": "", "selector_map": {},
                                                                               "stack_tag": ""}))))
        found = values.dig(values.unwrap(values.from_struct(getattr(answer, "return"))), spec.items) or []
        for item in found:
            if isinstance(item, dict) and values.dig(item, spec.fields.name) == name:
                return self._instance(item)
        return None

    def _check(self, spec: MemberSpec) -> Any:
        request = provider_pb2.CheckRequest(olds=values.to_struct({}), news=values.to_struct(self._inputs(spec)),
                                            urn=self._urn(spec.name), name=spec.name, type=self.config.resource)
        return self._rpc(f"check {spec.name}", "Check", request)

    def create(self, spec: MemberSpec) -> Instance:
        """Check, then Create; an existing instance of the member's name and labels is adopted."""
        existing = self._existing(spec)
        if existing is not None:
            return existing
        checked = self._check(spec)
        if checked.failures:
            f = checked.failures[0]
            raise PermanentError(f"pulumi: {self.config.resource} refused input {f.property!r} of {spec.name}: "
                                 f"{f.reason}")
        request = provider_pb2.CreateRequest(properties=checked.inputs, timeout=self.config.call_timeout,
                                             urn=self._urn(spec.name), name=spec.name, type=self.config.resource)
        try:
            created = self._rpc(f"create {spec.name}", "Create", request)
        except PermanentError as exc:
            if not any(word in exc.message.lower() for word in _EXISTS):
                raise
            found = self._named(spec.name)  # "already exists": ours (a lost answer) or someone else's
            if found is None:
                raise TransientError(f"pulumi: {spec.name} exists but is not listed yet") from None
            if not found.owned_by(spec.stack):
                raise PermanentError(f"pulumi: a resource named {spec.name} exists without stack {spec.stack!r}'s "
                                     "labels; infra will not adopt it",
                                     hint="rename or delete that resource, or rename the stack") from None
            return found
        props = values.unwrap(values.from_struct(created.properties))
        return self._instance({**props, "id": created.id}, fallback_name=spec.name, fallback_id=created.id)

    def delete(self, instance: Instance) -> None:
        """Read (empty id: gone), check the read resource is this stack's, then Delete."""
        read = self._rpc(f"read {instance.name}", "Read", provider_pb2.ReadRequest(
            id=instance.id, properties=values.to_struct({}), inputs=values.to_struct({}),
            urn=self._urn(instance.name), name=instance.name, type=self.config.resource))
        if not read.id:
            return
        live = self._instance({**values.unwrap(values.from_struct(read.properties)), "id": read.id},
                              fallback_name=instance.name, fallback_id=read.id)
        require_owned("pulumi", live, self.stack)
        try:
            self._rpc(f"delete {instance.name}", "Delete", provider_pb2.DeleteRequest(
                id=read.id, properties=read.properties, old_inputs=read.inputs,
                timeout=self.config.call_timeout, urn=self._urn(instance.name), name=instance.name,
                type=self.config.resource))
        except NotFoundError:
            return

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance:
        """Read, check ownership, then ``Diff`` and ``Update`` with the label input changed.

        The inputs templated ``"{labels}"`` or ``"{label_tags}"`` carry the labels. When the plugin's
        ``Diff`` says the change replaces the resource, nothing is done and PermanentError says so:
        infra changes labels only in place (the plan then keeps reporting the difference)."""
        read = self._rpc(f"read {instance.name}", "Read", provider_pb2.ReadRequest(
            id=instance.id, properties=values.to_struct({}), inputs=values.to_struct({}),
            urn=self._urn(instance.name), name=instance.name, type=self.config.resource))
        if not read.id:
            raise NotFoundError(f"pulumi: {instance.name} ({instance.id}) is gone")
        live = self._instance({**values.unwrap(values.from_struct(read.properties)), "id": read.id},
                              fallback_name=instance.name, fallback_id=read.id)
        require_label_update("pulumi", live, labels, self.stack)
        merged = merged_labels(live.labels, labels)
        olds = dict(values.unwrap(values.from_struct(read.inputs)))
        news = dict(olds)
        for key, template in self.config.inputs.items():
            if template in ("{labels}", "{label_tags}"):
                news[key] = values.render(template, {"labels": merged})
        if news == olds:
            return live
        urn = self._urn(instance.name)
        diff = self._rpc(f"diff {instance.name}", "Diff", provider_pb2.DiffRequest(
            id=read.id, urn=urn, olds=read.properties, news=values.to_struct(news), old_inputs=read.inputs,
            name=instance.name, type=self.config.resource))
        if diff.replaces:
            raise PermanentError(f"pulumi: {self.config.resource} would replace {instance.name} to change "
                                 f"{', '.join(diff.replaces)}; infra changes labels only in place",
                                 hint="the labels are left as they are; nothing is replaced for a label")
        checked = self._rpc(f"check {instance.name}", "Check", provider_pb2.CheckRequest(
            olds=read.inputs, news=values.to_struct(news), urn=urn, name=instance.name, type=self.config.resource))
        updated = self._rpc(f"update {instance.name}", "Update", provider_pb2.UpdateRequest(
            id=read.id, urn=urn, olds=read.properties, news=checked.inputs, old_inputs=read.inputs,
            timeout=self.config.call_timeout, name=instance.name, type=self.config.resource))
        props = values.unwrap(values.from_struct(updated.properties))
        return self._instance({**props, "id": read.id}, fallback_name=instance.name, fallback_id=read.id)

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        """``Check`` on each distinct member spec (one per group and spec); failures name the input."""
        problems: builtins.list[Problem] = []
        seen: set[tuple[str, str]] = set()
        for spec in members:
            key = (spec.group, spec.spec_hash)
            if key in seen:
                continue
            seen.add(key)
            if key not in self._valid:  # a spec the plugin accepted once is not asked again (daemon passes)
                found = [Problem(field=f"groups.{spec.group}.inputs.{f.property}", message=f.reason)
                         for f in self._check(spec).failures]
                if found:
                    problems.extend(found)
                    continue
                self._valid.add(key)
        return problems

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        """Prometheus's own discovery of the cloud: ``hetzner_sd`` (role hcloud) or
        ``digitalocean_sd``; the prometheus role filters on the servers' labels (tags). The API
        token is read on the Prometheus instance from ``credentials_file``, never written here."""
        token = {"credentials_file": "/run/config/prometheus/cloud-token"}
        if self.config.discovery == "hetzner":
            return {"hetzner_sd_configs": [{"role": "hcloud", "port": port, "refresh_interval": "30s",
                                            "authorization": token}]}
        if self.config.discovery == "digitalocean":
            return {"digitalocean_sd_configs": [{"port": port, "refresh_interval": "30s", "authorization": token}]}
        return None

    def plugin_info(self) -> str:
        """The plugin's version (GetPluginInfo)."""
        return str(self._rpc("get plugin info", "GetPluginInfo", empty_pb2.Empty()).version)


__all__ = ["PulumiProvider"]
