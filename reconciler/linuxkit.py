"""Renders the LinuxKit YAML a member's image is built from.

One function, :func:`render`, turns a :class:`~reconciler.model.MemberSpec` into the YAML that
``linuxkit build`` takes: a pinned kernel, the init components (init, runc, containerd,
ca-certificates), ``onboot`` steps that end with LinuxKit's ``metadata`` package fetching the
member's user-data from the provider named by ``metadata`` and expanding it under
``/run/config``, and one ``services`` entry per :class:`~reconciler.model.Service`.

It is provider-neutral: the local provider writes the result into each instance's directory
(``metadata="cdrom"``, how ``linuxkit run`` hands user-data to a local VM), the cloud providers
and the image pipeline render the same member with ``"aws"`` or ``"gcp"``. Nothing secret is
rendered: file contents reach the instance only through user-data (:meth:`MemberSpec.userdata`),
never through the image.

Placeholders in service commands and environment are expanded to the paths they have *inside*
a LinuxKit instance: ``{config}`` → ``/run/config``, ``{data}`` → ``/var/lib/infra``,
``{name}`` → the instance name, and ``{address}`` → ``address`` when the caller knows it (else
left as written, for a service wrapper to fill in at boot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import yaml

from reconciler.model import MemberSpec, Service

#: Pinned LinuxKit component images. These are *pins*, not discovered at run time: LinuxKit
#: publishes its packages under content-hash tags, and an image built from this YAML is only
#: reproducible if every component is pinned. Bump them together, deliberately, after
#: checking the new set boots (``linuxkit build`` + ``linuxkit run``).
KERNEL_IMAGE: Final = "linuxkit/kernel:6.6.71"
KERNEL_CMDLINE: Final = "console=tty0 console=ttyS0 console=ttyAMA0"
INIT_IMAGES: Final = (
    "linuxkit/init:8eea386739975a43af558eec757a7dcb3a3d2e7b",
    "linuxkit/runc:667e7ea2c426a2460ca21e3da065a57dbb3369c9",
    "linuxkit/containerd:a988a1a8bcbacc2c0390ca0c08f949e2b4b5915d",
    "linuxkit/ca-certificates:7b32a26ca9c275d3ef32b11fe2a83e4a2a4a0c09",
)
SYSCTL_IMAGE: Final = "linuxkit/sysctl:5f56434b81004b50b47ed629b222619168c2bcdf"
DHCPCD_IMAGE: Final = "linuxkit/dhcpcd:157df9ef45a035f1542ec2270e374f18efef98a5"
METADATA_IMAGE: Final = "linuxkit/metadata:83cda7b43112b201613084ea8b7fab585b6e5549"

#: Metadata sources LinuxKit's ``metadata`` package understands (its first argument).
METADATA_PROVIDERS: Final = frozenset(
    {"aws", "gcp", "hetzner", "openstack", "packet", "scaleway", "vultr", "digitalocean", "cdrom", "vmware"}
)

#: Where things live inside a LinuxKit instance.
CONFIG_DIR: Final = "/run/config"
DATA_DIR: Final = "/var/lib/infra"


def expand(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{key}`` for every key of ``values`` in ``text``; other braces are left alone."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _service(svc: Service, values: Mapping[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": svc.name,
        "image": svc.image,
        "command": [expand(arg, values) for arg in svc.command],
        "net": "host",
        "binds": [f"{CONFIG_DIR}:{CONFIG_DIR}:ro", f"{DATA_DIR}/{svc.name}:{DATA_DIR}"],
        "runtime": {"mkdir": [f"{DATA_DIR}/{svc.name}"]},
    }
    if svc.env:
        entry["env"] = [f"{k}={expand(v, values)}" for k, v in sorted(svc.env.items())]
    return entry


def document(spec: MemberSpec, *, metadata: str, address: str | None = None) -> dict[str, Any]:
    """The LinuxKit configuration of ``spec`` as a dict (see :func:`render`).

    Raises ValueError when ``metadata`` is not a source the ``metadata`` package knows.
    """
    if metadata not in METADATA_PROVIDERS:
        known = ", ".join(sorted(METADATA_PROVIDERS))
        raise ValueError(f"unknown LinuxKit metadata provider {metadata!r}; known: {known}")
    values = {"config": CONFIG_DIR, "data": DATA_DIR, "name": spec.name}
    if address is not None:
        values["address"] = address
    member = {
        "name": spec.name,
        "stack": spec.stack,
        "group": spec.group,
        "member": spec.member,
        "role": spec.role,
        "spec": spec.spec_hash,
    }
    return {
        "kernel": {"image": KERNEL_IMAGE, "cmdline": KERNEL_CMDLINE},
        "init": list(INIT_IMAGES),
        "onboot": [
            {"name": "sysctl", "image": SYSCTL_IMAGE},
            {
                "name": "dhcpcd",
                "image": DHCPCD_IMAGE,
                "command": ["/sbin/dhcpcd", "--nobackground", "-f", "/dhcpcd.conf", "-1"],
            },
            {
                "name": "metadata",
                "image": METADATA_IMAGE,
                "command": ["/usr/bin/metadata", metadata],
            },
        ],
        "services": [_service(svc, values) for svc in spec.services],
        "files": [
            {
                "path": "etc/infra/member.json",
                "contents": json.dumps(member, sort_keys=True),
                "mode": "0644",
            }
        ],
    }


def render(spec: MemberSpec, *, metadata: str, address: str | None = None) -> str:
    """The LinuxKit YAML for ``spec``, with user-data fetched from the ``metadata`` source.

    ``metadata`` is the ``linuxkit/metadata`` provider argument (``"cdrom"`` for a local VM,
    ``"aws"``, ``"gcp"``...). Raises ValueError for an unknown one. The output contains no file
    contents from ``spec.files``: those travel as user-data.
    """
    header = (
        f"# LinuxKit configuration of {spec.name} (stack {spec.stack}, group {spec.group}, "
        f"member {spec.member}, spec {spec.spec_hash}).\n"
        "# Rendered by infra; component images are pinned in reconciler/linuxkit.py.\n"
        f"# Build: linuxkit build -format <format> {spec.name}.yml\n"
    )
    body = yaml.safe_dump(document(spec, metadata=metadata, address=address), sort_keys=False, width=1000)
    return header + body
