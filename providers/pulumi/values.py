"""Values between infra and a Pulumi plugin: protobuf ``Struct`` ⇄ Python, secrets, input templates.

Called by :mod:`providers.pulumi.provider`. Pulumi marks a secret output as an object with the
signature key ``4dabf18193072939515e22adb298388d`` (value ``1b47061264138c4ac30d75fd1eb44270``);
:func:`unwrap` removes those wrappers and returns the secret values replaced by ``"[secret]"``,
so a secret never reaches an :class:`~reconciler.core.model.Instance`, a plan or a log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
REDACTED = "[secret]"


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return struct


def from_struct(struct: struct_pb2.Struct | None) -> dict[str, Any]:
    if struct is None:
        return {}
    out: dict[str, Any] = json_format.MessageToDict(struct)
    return out


def secret(value: Any) -> dict[str, Any]:
    """``value`` wrapped as a Pulumi secret (the engine's sentinel): a plugin that accepts secrets
    keeps it out of its logs and state in the clear."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def unwrap(value: Any) -> Any:
    """``value`` with Pulumi's secret wrappers replaced by ``"[secret]"`` (recursively)."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return REDACTED
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


_PLACEHOLDER = re.compile(r"\{(name|userdata|image|machine_type|stack|group|member|selector|stack_tag)\}")
#: Any ``{word}`` in a template (to tell a variable that does not exist in its place).
_ANY = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: The variables of each place a template is written in.
INPUT_VARIABLES = ("name", "labels", "label_tags", "userdata", "image", "machine_type", "stack", "group", "member")
LIST_VARIABLES = ("selector", "selector_map", "stack_tag")
#: Variables that stand for a whole value (a map or a list), so only as the whole string.
_WHOLE = {"labels", "label_tags", "selector_map"}


def template_problems(template: Any, variables: tuple[str, ...], where: str) -> list[str]:
    """What is wrong with ``template`` in a place whose variables are ``variables``: each problem
    names the key (``where``-based path) and lists what is available there."""
    problems: list[str] = []
    available = ", ".join("{" + v + "}" for v in variables)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            for m in _ANY.finditer(value):
                name = m.group(1)
                if name not in variables:
                    problems.append(f"{path}: {{{name}}} is not a variable here (available: {available})")
                elif name in _WHOLE and value != m.group(0):
                    problems.append(f"{path}: {{{name}}} stands for a whole value; write it alone, as \"{{{name}}}\"")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(template, where)
    return problems


def render(template: Any, variables: Mapping[str, Any]) -> Any:
    """An ``inputs`` template with the member's values filled in.

    A string that is exactly ``"{labels}"`` becomes the labels map, ``"{label_tags}"`` the labels
    as ``key:value`` strings (for clouds whose servers have tags, not labels); other strings have
    ``{name}``, ``{userdata}``, ``{image}``, ``{machine_type}``, ``{stack}``, ``{group}``,
    ``{member}`` replaced. Lists and maps are rendered item by item; other values are literals. A
    value that renders to None (no image, say) drops its key.
    """
    if isinstance(template, str):
        if template == "{labels}":
            return dict(variables["labels"])
        if template == "{label_tags}":
            return [f"{k}:{v}" for k, v in sorted(dict(variables["labels"]).items())]
        if template == "{selector_map}":
            return dict(variables["selector_map"])
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return variables.get(whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1)) or ""), template)
    if isinstance(template, list):
        return [render(v, variables) for v in template]
    if isinstance(template, dict):
        rendered = {k: render(v, variables) for k, v in template.items()}
        return {k: v for k, v in rendered.items() if v is not None}
    return template


def dig(doc: Any, path: str) -> Any:
    """``doc["a"]["b"]`` for ``"a.b"``; None when a step is missing."""
    for part in path.split(".") if path else []:
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def parse_tags(tags: Any) -> dict[str, str]:
    """``["infra-stack:web", "x"]`` → ``{"infra-stack": "web"}`` (tags without ``:`` are ignored)."""
    out: dict[str, str] = {}
    for tag in tags or []:
        if isinstance(tag, str) and ":" in tag:
            key, _, value = tag.partition(":")
            out[key] = value
    return out


def text(value: Any) -> str | None:
    """A scalar as text; protobuf's numbers are floats, so an integer id ``12.0`` reads ``"12"``."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
