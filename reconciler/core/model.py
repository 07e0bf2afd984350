"""The data passed between the engine, providers and roles.

* :class:`MemberSpec` — one desired member, produced by a role's ``expand``; what a provider's
  ``create`` receives. Its deterministic ``name`` and ``labels`` make create idempotent and
  ownership visible at the provider with no state file.
* :class:`Instance` — one observed instance, returned by a provider's ``list``.
* :class:`ConfigFile` / :class:`Service` — what runs on a member and the files it reads. Files
  reach the instance the way LinuxKit's ``metadata`` package delivers user-data
  (:func:`MemberSpec.userdata` is that JSON); services are LinuxKit services with the host
  command that stands in for each on the local provider.

Secrets (private keys) travel only in ``ConfigFile(secret=True)`` entries: they are excluded
from the spec hash, from plans, from ``repr`` and from logs.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    SerializationInfo,
    computed_field,
)

# Ownership labels (valid GCE labels and EC2 tags).
LABEL_STACK = "infra-stack"
LABEL_GROUP = "infra-group"
LABEL_MEMBER = "infra-member"
LABEL_SPEC = "infra-spec"
OWNERSHIP_LABELS = (LABEL_STACK, LABEL_GROUP, LABEL_MEMBER, LABEL_SPEC)
# What a group is, recorded on each of its instances, so that a group the stack file no longer
# declares is still known for what it is (and protected when it was).
LABEL_ROLE = "infra-role"
LABEL_POLICY = "infra-policy"
LABEL_PROTECT = "infra-protect"  # "true" on the instances of a protected group; absent otherwise

SPEC_HASH_LEN = 8

T = TypeVar("T")
M = TypeVar("M", bound=Mapping[str, Any])


def stack_selector(stack: str) -> dict[str, str]:
    """Labels that select every instance of ``stack`` (and nothing else)."""
    return {LABEL_STACK: stack}


def group_selector(stack: str, group: str) -> dict[str, str]:
    """Labels that select every instance of one group of ``stack``."""
    return {LABEL_STACK: stack, LABEL_GROUP: group}


def instance_name(stack: str, group: str, member: str, spec_hash: str) -> str:
    """The deterministic instance name: ``<stack>-<group>-<member>-<spec>``."""
    return f"{stack}-{group}-{member}-{spec_hash}"


#: One shared ``__pydantic_fields_set__`` per distinct set of field names (see _Frozen).
_FIELD_SETS: dict[frozenset[str], set[str]] = {}
#: (id of a shared fields set, names added) → (that set, the shared set with the names added).
_WITH_FIELDS: dict[tuple[int, frozenset[str]], tuple[set[str], set[str]]] = {}
#: The names :meth:`MemberSpec.sibling` and :meth:`MemberSpec.with_labels` change (``changed``'s keys).
_SIBLING_FIELDS = frozenset({"member", "placement"})
_LABEL_FIELDS = frozenset({"extra_labels"})


class _Frozen(BaseModel):
    """A frozen model whose instances share their "fields set" bookkeeping.

    pydantic keeps, per instance, the set of fields that were given (a ``set`` of ~700 bytes,
    half of a MemberSpec or an Instance). A frozen model never changes it in place (``model_copy``
    copies it first), so instances built with the same fields share one set: 100,000 members and
    their instances weigh about 140 MB less.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        key = frozenset(given)
        shared = _FIELD_SETS.get(key)
        if shared is None:
            shared = _FIELD_SETS.setdefault(key, set(key))
        object.__setattr__(self, "__pydantic_fields_set__", shared)


class ConfigFile(_Frozen):
    """A file the member reads at start, below its config directory (LinuxKit ``/run/config``).

    ``path`` is relative (``etcd/etcd.flags``). ``secret`` files (private keys) never appear
    in plans or logs and do not count towards the spec hash. ``in_spec=False`` marks runtime
    settings (e.g. etcd's ``initial-cluster``) that may differ between two members with the same
    spec and so must not force a replacement.
    """

    path: str
    content: str = Field(repr=False)
    mode: int = 0o644
    secret: bool = False
    in_spec: bool = True


#: A name a shell and ``env`` accept as a variable: it is spliced into a boot wrapper (``export NAME=``).
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_names(value: M) -> M:
    """``value`` when every key is a shell identifier; ValueError naming the first that is not."""
    for key in value:
        if not ENV_NAME_RE.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name: use letters, digits and '_', "
                             "not starting with a digit")
    return value


def _secret_json(value: SecretStr, info: SerializationInfo) -> str:
    """A secret in JSON: masked, but for the one internal dump that must keep it (a typed group's
    settings becoming its ``config``, with context ``{"reveal_secrets": True}``)."""
    context = info.context if isinstance(info.context, dict) else {}
    return value.get_secret_value() if context.get("reveal_secrets") else "**********"


#: A secret setting (a token, a password): masked in repr, str and JSON output.
Secret = Annotated[SecretStr, PlainSerializer(_secret_json, when_used="json")]

#: Environment variables: names checked as shell identifiers wherever they are declared.
EnvVars = Annotated[Mapping[str, str], AfterValidator(check_env_names)]


def _check_secret_env(value: tuple[str, ...]) -> tuple[str, ...]:
    check_env_names(dict.fromkeys(value, ""))
    return value


#: Names of secret environment variables (their values travel as files, see :func:`secret_env_file`).
SecretEnvNames = Annotated[tuple[str, ...], AfterValidator(_check_secret_env)]


def secret_env_file(service: str, name: str) -> str:
    """Where the value of ``service``'s secret variable ``name`` is delivered, relative to the
    member's config directory (``/run/config`` in LinuxKit): a 0600 user-data file, read when the
    service starts, so the value is never in an image document, a plan or the spec hash."""
    return f"{service}/secret-env/{name}"


class Service(_Frozen):
    """A long-running service of the member: a LinuxKit service and its local stand-in.

    ``image`` is the container image LinuxKit would run; ``command`` is the host command the
    local provider runs instead. Placeholders in ``command`` and ``env`` values are expanded by
    the provider: ``{address}`` (the instance's address), ``{config}`` (its config directory),
    ``{data}`` (its data directory), ``{name}`` (instance name). ``ports`` are TCP ports the
    service listens on at the instance's address. ``secret_env`` names variables whose values the
    service reads at start from its secret files (:func:`secret_env_file`); only the names are here.
    ``debian_package`` is the Debian package whose binaries run the service in an image built
    from Debian packages (:mod:`reconciler.engine.debianbuild`), next to the OCI ``image`` LinuxKit
    runs; it is not part of the spec hash (what it changes, the image, is).
    """

    name: str
    image: str
    command: tuple[str, ...]
    env: EnvVars = Field(default_factory=dict)
    ports: tuple[int, ...] = ()
    secret_env: SecretEnvNames = ()
    debian_package: str | None = None


#: ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` without building an encoder per call.
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _services_doc(services: tuple[Service, ...]) -> list[Any]:
    # secret_env only when set: a service without one hashes as it did before the field existed;
    # debian_package never (a declaration of the roles, not of the member: adding it rolls nothing).
    return [s.model_dump(mode="json", exclude={"debian_package"} if s.secret_env else {"secret_env", "debian_package"})
            for s in services]


def _files_doc(files: tuple[ConfigFile, ...]) -> list[Any]:
    return [{"path": f.path, "content": f.content, "mode": f.mode} for f in files if f.in_spec and not f.secret]


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else _dumps(value)


#: (doc function, ids of the items) → (the items, their canonical JSON). Keyed by the items'
#: identities because validation gives every MemberSpec its own tuple but keeps the (frozen)
#: Service and ConfigFile objects a role passed in; holding the items keeps their ids from
#: being reused while the entry lives. Cleared when it grows past _MEMO_MAX.
_MEMO: dict[tuple[Callable[..., list[Any]], tuple[int, ...]], tuple[tuple[Any, ...], str]] = {}
_MEMO_MAX = 4096


def _memo_json(items: tuple[T, ...], doc: Callable[[tuple[T, ...]], list[Any]]) -> str:
    """The canonical JSON of ``doc(items)``, computed once per sequence of the same objects.

    Files that include a secret are never memoised, so no private key outlives its member in
    this cache.
    """
    if any(isinstance(i, ConfigFile) and i.secret for i in items):
        return _dumps(doc(items))
    key = (doc, tuple(map(id, items)))
    hit = _MEMO.get(key)
    if hit is not None:  # the entry holds its items, so equal ids mean the very same objects
        return hit[1]
    text = _dumps(doc(items))
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = (items, text)
    return text


def _keep_mapping(value: Any) -> Mapping[str, Any]:
    """A provider_config mapping, kept as the very object passed (every member of a group shares
    the stack's one merged mapping, so its spec hash is computed once per group)."""
    if type(value) is not dict and type(value) is not MappingProxyType and not isinstance(value, Mapping):
        raise ValueError(f"provider_config must be a mapping, not {type(value).__name__}")
    return value


#: ``provider_config`` of a member: any mapping of JSON values, kept by identity, dumped as a dict.
ProviderSettings = Annotated[Mapping[str, Any], PlainValidator(_keep_mapping), PlainSerializer(dict)]

#: (role, image, machine type, provider_config, services, files) by identity → (those objects,
#: the spec hash). The members of a group share all of them, so a group of 10,000 members hashes
#: once. Holding the objects keeps their ids from being reused while the entry lives; members
#: with a secret file are never memoised (no private key outlives its member here).
_HASHES: dict[tuple[Any, ...], tuple[tuple[Any, ...], str]] = {}


class MemberSpec(_Frozen):
    """One desired member of a group: everything needed to create its instance."""

    stack: str
    group: str
    member: str
    role: str
    image: str | None = None
    machine_type: str | None = None
    services: tuple[Service, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    provider_config: ProviderSettings = Field(default_factory=dict)
    placement: int = Field(0, description="index used to spread members over zones/subnets")
    address: str | None = Field(
        None,
        description="the address reserved for this member by Provider.address_for, known before "
        "creation so roles can write it into configuration; not part of the spec hash",
    )
    extra_labels: ProviderSettings = Field(
        default_factory=dict,
        description="labels recorded on the instance besides ownership: the group's role, update policy "
        "and protection, and the user's labels. Not part of the spec hash: they change in place",
    )
    image_digest: str | None = Field(
        None,
        description="set when ``image`` is built by infra's image pipeline from the group's LinuxKit "
        "document (reconciler.core.image): the digest that image is labelled with. The provider need not "
        "check such an image exists (the plan pushes it first). Not part of the spec hash: the image "
        "name already carries the digest",
    )

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def spec_hash(self) -> str:
        """Short hash of everything that, when changed, requires replacing the instance.

        The SHA-256 of the canonical JSON (sorted keys, no spaces) of ``{"files", "image",
        "machine_type", "provider_config", "role", "services"}``, files without secrets and
        runtime (``in_spec=False``) entries. Assembled from the JSON of each key, which is the
        same text; the JSON of ``services`` and ``files`` is memoised by the identity of their items
        because a role usually gives every member of a group the same Service/ConfigFile objects,
        and so is the whole hash (``_HASHES``).
        """
        files, services, config = self.files, self.services, self.provider_config
        if any(f.secret for f in files):
            return self._compute_hash()
        key = (self.role, self.image, self.machine_type, id(config), *map(id, services), None, *map(id, files))
        hit = _HASHES.get(key)
        if hit is not None:  # the entry holds its objects, so equal ids mean the very same objects
            return hit[1]
        digest = self._compute_hash()
        if len(_HASHES) >= _MEMO_MAX:
            _HASHES.clear()
        _HASHES[key] = ((config, services, files), digest)
        return digest

    def _compute_hash(self) -> str:
        raw = (
            f'{{"files":{_memo_json(self.files, _files_doc)},"image":{_json_or_null(self.image)},'
            f'"machine_type":{_json_or_null(self.machine_type)},'
            f'"provider_config":{_dumps(dict(self.provider_config))},"role":{_dumps(self.role)},'
            f'"services":{_memo_json(self.services, _services_doc)}}}'
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:SPEC_HASH_LEN]

    def sibling(self, member: str, placement: int) -> MemberSpec:
        """Another member of the same group: this one with only ``member`` and ``placement`` changed.

        Neither is part of the spec hash, so the copy keeps this member's (computed once for the
        whole group) and needs no validation beyond their types: a role expanding 10,000 members
        validates one and copies it (about 1 µs instead of 8 µs a member). Built as pydantic's
        ``model_construct`` builds an instance, without its per-call overhead.
        """
        if not isinstance(member, str) or not isinstance(placement, int):
            raise TypeError("member must be a str and placement an int")
        if self.address is not None:
            raise ValueError("a member with a reserved address has no siblings: reserve one per member")
        return self._unvalidated(_SIBLING_FIELDS, {"member": member, "placement": placement})

    def _unvalidated(self, names: frozenset[str], changed: dict[str, Any]) -> MemberSpec:
        """A copy with ``changed`` fields (``names``: its keys; none of them in the spec hash: the cached hash is kept),
        built as pydantic's ``model_construct`` builds one, without its per-call overhead; its
        fields set is the shared one for this member's with the changed names added."""
        fields = dict(self.__dict__)
        fields.update(changed)
        copy = MemberSpec.__new__(MemberSpec)
        object.__setattr__(copy, "__dict__", fields)
        given = self.__pydantic_fields_set__
        hit = _WITH_FIELDS.get((id(given), names))
        if hit is None or hit[0] is not given:  # (the same shared set, not a reused id)
            key = frozenset(given | names)
            hit = (given, _FIELD_SETS.get(key) or _FIELD_SETS.setdefault(key, set(key)))
            _WITH_FIELDS[(id(given), names)] = hit
        object.__setattr__(copy, "__pydantic_fields_set__", hit[1])
        object.__setattr__(copy, "__pydantic_extra__", None)
        object.__setattr__(copy, "__pydantic_private__", None)
        return copy

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> MemberSpec:
        """A copy with ``update`` applied; the cached spec hash is recomputed, never carried over."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("spec_hash", None)
        return copy

    @property
    def name(self) -> str:
        return instance_name(self.stack, self.group, self.member, self.spec_hash)

    @property
    def labels(self) -> dict[str, str]:
        """Every label the instance carries: the extra labels, then the ownership labels."""
        return {
            **self.extra_labels,
            LABEL_STACK: self.stack,
            LABEL_GROUP: self.group,
            LABEL_MEMBER: self.member,
            LABEL_SPEC: self.spec_hash,
        }

    def with_labels(self, extra: Mapping[str, str]) -> MemberSpec:
        """This member with ``extra_labels`` set to ``extra`` (the same mapping for a whole group).

        Labels are not part of the spec hash, so the copy keeps the hash computed for the group
        and is made without validation, as :meth:`sibling` does (the engine labels every member of
        every pass).
        """
        return self._unvalidated(_LABEL_FIELDS, {"extra_labels": extra})

    def userdata(self) -> dict[str, Any]:
        """The member's files in the JSON shape LinuxKit's ``metadata`` package expands.

        ``{"etcd": {"entries": {"etcd.flags": {"content": "...", "perm": "0644"}}}}`` becomes
        ``/run/config/etcd/etcd.flags`` on a LinuxKit instance. Besides the role's files it
        holds the member's identity under ``infra/`` (:meth:`identity_files`), which the image's
        services read at boot (:mod:`reconciler.core.linuxkit`). Contains secrets: hand it only to the
        provider's create call, never to a log or plan.
        """
        root: dict[str, Any] = {}
        for f in (*self.files, *self.identity_files()):
            parts = [p for p in f.path.split("/") if p]
            node = root
            for part in parts[:-1]:
                node = node.setdefault(part, {"entries": {}})["entries"]
            node.setdefault(parts[-1], {"content": f.content, "perm": f"{f.mode:04o}"})
        return root

    def identity_files(self) -> tuple[ConfigFile, ...]:
        """``infra/name``, ``infra/member.json`` and (when reserved) ``infra/address``.

        The per-member values an image must not contain: a booted member reads them from its
        metadata. Runtime files (``in_spec=False``): they differ between members of one spec.
        """
        member = {"name": self.name, "stack": self.stack, "group": self.group, "member": self.member,
                  "role": self.role, "spec": self.spec_hash}
        files = [
            ConfigFile(path="infra/name", content=self.name, in_spec=False),
            ConfigFile(path="infra/member.json", content=_dumps(member), in_spec=False),
        ]
        if self.address:
            files.append(ConfigFile(path="infra/address", content=self.address, in_spec=False))
        return tuple(files)

    def public_view(self) -> dict[str, Any]:
        """What a plan may show of this member: no file contents, no secrets."""
        return {
            "name": self.name,
            "spec": self.spec_hash,
            "image": self.image,
            "machine_type": self.machine_type,
            "services": [s.name for s in self.services],
        }

    def with_files(self, *files: ConfigFile) -> MemberSpec:
        """A copy with ``files`` added or replacing files of the same path."""
        paths = {f.path for f in files}
        kept = tuple(f for f in self.files if f.path not in paths)
        return self.model_copy(update={"files": kept + tuple(files)})


class InstanceStatus(str, enum.Enum):
    """Where an observed instance is in its life, as the provider reports it."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"  # its processes/VM are gone but the instance record is not
    UNKNOWN = "unknown"


class Instance(_Frozen):
    """An instance observed at a provider."""

    id: str
    name: str
    labels: Mapping[str, str] = Field(default_factory=dict)
    address: str | None = None
    status: InstanceStatus = InstanceStatus.UNKNOWN
    detail: str | None = Field(None, description="provider's note, e.g. why it is dead")
    created_at: float | None = Field(None, description="when it was created (Unix time), when the provider says")

    @property
    def stack(self) -> str | None:
        return self.labels.get(LABEL_STACK)

    @property
    def group(self) -> str | None:
        return self.labels.get(LABEL_GROUP)

    @property
    def member(self) -> str | None:
        return self.labels.get(LABEL_MEMBER)

    @property
    def spec_hash(self) -> str | None:
        return self.labels.get(LABEL_SPEC)

    def owned_by(self, stack: str) -> bool:
        """True when the instance carries every ownership label of ``stack``."""
        labels = self.labels  # OWNERSHIP_LABELS, spelled out: called for every instance, twice a pass
        return (labels.get(LABEL_STACK) == stack and LABEL_GROUP in labels and LABEL_MEMBER in labels
                and LABEL_SPEC in labels)

    @property
    def alive(self) -> bool:
        return self.status in (InstanceStatus.PENDING, InstanceStatus.RUNNING)

    @property
    def protected(self) -> bool:
        """Whether it carries its group's protection (``infra-protect=true``)."""
        return self.labels.get(LABEL_PROTECT) == "true"


class Health(str, enum.Enum):
    """A role's verdict on one instance."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class UpdatePolicy(str, enum.Enum):
    """How the planner and executor may change a group."""

    CATTLE = "cattle"  # any order, in parallel, create-before-delete when names differ
    QUORUM = "quorum"  # one change at a time, health gate between, remove before add


class Problem(_Frozen):
    """Something wrong found by ``validate`` before anything changes."""

    field: str = Field(description="where: 'groups[0].size', 'provider_config.zones', ...")
    message: str
    severity: str = "error"  # "error" stops the run; "warning" is printed

    @property
    def is_error(self) -> bool:
        return self.severity == "error"
