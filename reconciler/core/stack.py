"""The desired state a user declares: a :class:`Stack` of :class:`Group` s.

Users build these in a stack file (``stacks/*.py``); :mod:`reconciler.engine.loader` finds the one
``Stack`` in it. The models are frozen pydantic v2 models that reject unknown fields, so a typo
is an error naming the field instead of a silently ignored setting.

A group is declared in one of two equal forms:

* **typed**, with a role's own group class (``plugins.etcd.Etcd(name="etcd", size=3,
  version="3.4.23")``): a :class:`Group` subclass whose ``settings_model`` is the role's settings
  model, so every setting is a typed keyword checked where the group is built, and
  ``Group.config`` is filled from the keywords that were given (:meth:`Group._typed_settings`);
* **generic**, ``Group(role="etcd", config={...})``, for any role, third-party ones included;
  ``config`` is validated later against the settings model the role publishes.

Both give the engine the same ``Group.config`` (only the settings that were set), so an equal
declaration in either form expands to members with the same spec hashes.

What keeps a group safe is declared with it: ``protect=True`` (no plan deletes the group as a
whole while any member carries it, recorded on the instances so it survives the declaration),
``labels`` (recorded on every instance, changed in place), and ``remediation``
(:class:`Remediation`: how many unhealthy members infra may replace at once, after how long, and
when it stops). A group deleted from the file is kept until the stack says so with
``removed=[Removed("name")]`` (Terraform's ``removed`` block).

Each Stack and Group remembers where it was built (``declared_at``: the stack file and line, set
while :mod:`reconciler.engine.loader` runs the file), so an error found later — by a role, a provider, or
the image pipeline — can point at the line that declared the field (:mod:`reconciler.core.fieldpath`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    model_validator,
)

_LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")

#: Longest stack or group name. Instance names are ``<stack>-<group>-<member>-<spec8>`` and must
#: fit the 63 characters GCE allows; members are ``<group>-<n>``.
MAX_NAME = 20


def _check_name(value: str) -> str:
    if not _LABEL_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    if len(value) > MAX_NAME:
        raise ValueError(f"{value!r} is {len(value)} characters long; at most {MAX_NAME} are allowed")
    return value


#: A stack, group or member name: valid as a GCE label value, an EC2 tag and a DNS label.
Name = Annotated[str, AfterValidator(_check_name)]

#: Settings passed through to a provider or role, validated by that plugin's own model.
Settings = dict[str, JsonValue]

_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
#: Label keys infra keeps for itself (ownership, role, policy, protection).
RESERVED_LABEL_PREFIX = "infra-"


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not _LABEL_KEY_RE.match(key):
            raise ValueError(f"label key {key!r} is not valid: a lowercase letter, then at most 62 lowercase "
                             "letters, digits, '_' or '-' (valid as a GCE label and an EC2 tag)")
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise ValueError(f"label key {key!r}: keys starting with {RESERVED_LABEL_PREFIX!r} are infra's own")
        if not _LABEL_VALUE_RE.match(val):
            raise ValueError(f"label {key}={val!r}: a value is at most 63 lowercase letters, digits, '_' or '-'")
    return value


#: Labels recorded on every instance of a group (cost centre, team): changed in place.
Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]

_PERCENT_RE = re.compile(r"^(\d{1,3})%$")


class Remediation(BaseModel):
    """How infra replaces a group's unhealthy members (Cluster API's MachineHealthCheck).

    Safe with no settings: a group whose members fail together (a shared dependency is down) is
    held, not replaced; one failed probe replaces nothing; a member just made is not judged; a
    member replaced again and again is held with the reason.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_unhealthy: int | str = Field(
        "40%", description="above this many unhealthy members (a count, or a percentage of the group's "
        "size) no unhealthy member of the group is replaced; one is always allowed")
    unhealthy_after: float = Field(
        10.0, ge=0, description="seconds a member must have been seen failing its health check before it is "
        "replaced (the daemon remembers the first sighting; a dead instance is replaced at once)")
    startup_grace: float = Field(30.0, ge=0, description="seconds after its creation a member is not judged")
    crash_loop: int = Field(3, ge=1, description="replacements of one member within crash_window after which "
                            "it is held, not replaced again")
    crash_window: float = Field(600.0, gt=0, description="seconds over which replacements are counted")

    @model_validator(mode="after")
    def _limit(self) -> Remediation:
        value = self.max_unhealthy
        if isinstance(value, str):
            m = _PERCENT_RE.match(value.strip())
            if m is None or int(m.group(1)) > 100:
                raise ValueError(f"max_unhealthy {value!r}: a count (2) or a percentage from 0% to 100% (40%)")
        elif value < 0:
            raise ValueError("max_unhealthy: a count may not be negative")
        return self

    def allowed(self, size: int) -> int:
        """How many unhealthy members of a group of ``size`` may be replaced (at least one)."""
        value = self.max_unhealthy
        limit = value if isinstance(value, int) else int(value.strip().rstrip("%")) * size // 100
        return max(1, limit)

    @property
    def limit(self) -> str:
        """The limit as declared: ``40%`` or ``2``."""
        return str(self.max_unhealthy).strip()


#: The stack file :mod:`reconciler.engine.loader` is running (its resolved path), so that the models
#: built by it can remember their line.
LOADING: ContextVar[str | None] = ContextVar("infra_loading", default=None)


def _caller_line() -> tuple[str, int] | None:
    """(file, line) of the innermost frame of the stack file being loaded, if one is."""
    path = LOADING.get()
    if path is None:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == path:
            return path, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _Declared(BaseModel):
    """A frozen model that remembers the stack-file line it was built on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    _declared_at: tuple[str, int] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        self._declared_at = _caller_line()

    @property
    def declared_at(self) -> tuple[str, int] | None:
        """(stack file, line) where this was built, when it was built by a stack file."""
        return self._declared_at


def _group_name(value: Any) -> Any:
    return value.name if isinstance(value, Group) else value


#: Who builds an image (:data:`reconciler.core.image.BUILDERS`).
ImageBuilder = Literal["linuxkit", "debian"]

#: A reference to another group of the stack: its name, or the group object itself
#: (``Prometheus(watch=[etcd])``); validated to the name.
GroupRef = Annotated[str, BeforeValidator(_group_name)]


class Group(_Declared):
    """A node group: ``size`` identical members running one role.

    ``role`` names an installed role plugin (``command``, ``etcd``, ``prometheus``, ...);
    ``config`` holds that role's settings. ``image`` and ``machine_type`` are passed to the
    provider (a LinuxKit image reference and a cloud machine type); the local provider runs the
    role's services as host processes and ignores ``machine_type``.
    """

    name: Name
    size: Annotated[int, Field(ge=0, le=10_000)]
    role: str = "command"
    config: Settings = Field(default_factory=dict)
    image: str | None = None
    machine_type: str | None = None
    provider_config: Settings = Field(
        default_factory=dict,
        description="per-group provider settings (zones, subnets) merged over the stack's",
    )
    protect: bool = Field(
        False, description="recorded on every instance: while any member carries it, no plan deletes the "
        "group as a whole (destroy, removed, no longer declared); set False and apply it first")
    labels: Labels = Field(default_factory=dict, description="recorded on every instance; changed in place")
    remediation: Remediation = Field(default_factory=Remediation)
    image_builder: ImageBuilder | None = Field(
        None, description="who builds this group's image (default: the stack's image_builder)")

    #: Set by a role's typed group class (``plugins.etcd.Etcd``), which also inherits that model:
    #: the role's settings are then keywords of the group, and ``config`` is made from them.
    settings_model: ClassVar[type[BaseModel] | None] = None
    #: The role a typed group class runs (its ``role`` may not be changed).
    role_name: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _typed_role(cls, data: Any) -> Any:
        if cls.settings_model is None or not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("config"):
            keywords = ", ".join(f"{k}=..." for k in data["config"]) if isinstance(data["config"], dict) else ""
            raise ValueError(f"{cls.__name__} takes its role's settings as keywords, not config= (write "
                             f"{cls.__name__}(name=..., {keywords or 'setting=...'}))")
        if data.setdefault("role", cls.role_name) != cls.role_name:
            raise ValueError(f"{cls.__name__} runs role {cls.role_name!r}; for another role use that role's "
                             f"group class or Group(role=...)")
        return data

    @model_validator(mode="after")
    def _typed_settings(self) -> Group:
        """A typed group's ``config``: the role settings that were set, as JSON (defaults left out)."""
        model = type(self).settings_model
        if model is None:
            return self
        names = {n for n in model.model_fields if n in self.model_fields_set}
        # reveal_secrets: the role parses its settings from this config again (model.Secret)
        object.__setattr__(self, "config", self.model_dump(mode="json", include=names,
                                                           context={"reveal_secrets": True}))
        return self

    @property
    def typed(self) -> bool:
        """Whether this group was declared with a role's typed class (settings as keywords)."""
        return type(self).settings_model is not None


class Removed(_Declared):
    """A group the stack deletes on purpose (Terraform's ``removed`` block): ``Removed("etcd")``.

    Its members are deleted through its role (a quorum group one member at a time, as its role
    tears it down), never as cattle; ``role`` names that role when the instances were made before
    infra recorded it on them. A protected group is not deleted.
    """

    group: Name
    role: str | None = None

    def __init__(self, group: str | None = None, /, **data: Any) -> None:
        if group is not None:
            data["group"] = group
        super().__init__(**data)


def _removed(value: Any) -> Any:
    if isinstance(value, str):
        return Removed(value)
    return value


class Stack(_Declared):
    """Everything one ``infra apply`` converges: a named set of groups at one provider."""

    name: Name
    provider: str = "local"
    provider_config: Settings = Field(default_factory=dict)
    groups: tuple[Group, ...] = ()
    labels: Labels = Field(default_factory=dict, description="recorded on every instance of every group")
    image_builder: ImageBuilder = Field(
        "linuxkit", description="who builds the images infra builds for its groups: 'linuxkit' (the linuxkit CLI, "
        "from OCI images) or 'debian' (from Debian packages, reconciler.engine.debianbuild); part of each digest")
    removed: tuple[Annotated[Removed, BeforeValidator(_removed)], ...] = Field(
        (), description="groups to delete on purpose; a group merely left out of the file is kept")

    @model_validator(mode="after")
    def _unique_groups(self) -> Stack:
        seen: set[str] = set()
        for group in self.groups:
            if group.name in seen:
                raise ValueError(f"group {group.name!r} is declared twice; group names must be unique")
            seen.add(group.name)
        for gone in self.removed:
            if gone.group in seen:
                raise ValueError(f"group {gone.group!r} is both declared and removed; keep one of the two")
        return self

    def labels_of(self, group: Group) -> dict[str, str]:
        """The user labels of ``group``'s instances: the stack's, with the group's laid over them."""
        return {**self.labels, **group.labels}

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def group_provider_config(self, group: Group) -> Mapping[str, Any]:
        """The stack's provider settings with the group's own settings laid over them.

        One read-only mapping per group, the same object on every call: every member of the
        group shares it (and its spec-hash memo entry, :mod:`reconciler.core.model`).
        """
        hit = self._merged_configs.get(group.name)
        if hit is None or hit[0] is not group:  # a group of another stack, or a copy
            return MappingProxyType({**self.provider_config, **group.provider_config})
        return hit[1]

    @cached_property
    def _merged_configs(self) -> dict[str, tuple[Group, Mapping[str, Any]]]:
        """Each group's merged provider settings, computed once (cached like a field: no lookup
        through pydantic's private attributes, which cost more than the merge)."""
        return {g.name: (g, MappingProxyType({**self.provider_config, **g.provider_config})) for g in self.groups}
