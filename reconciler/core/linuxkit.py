"""Renders the LinuxKit image document of a group: what ``linuxkit build`` takes.

The *image* holds what every member of a group shares: a pinned kernel, the init components
(init, runc, containerd, ca-certificates), ``onboot`` steps that end with LinuxKit's
``metadata`` package fetching the member's user-data from the cloud named by ``metadata`` and
expanding it under ``/run/config``, and one ``services`` entry per
:class:`~reconciler.core.model.Service`. It carries no member name, address, spec hash or file
content: those are the member's *user-data* (:meth:`MemberSpec.userdata`), so every member of a
group boots the same image and an image is built once per content (:mod:`reconciler.core.image`).

Called by :mod:`reconciler.core.image` (the pipeline's image identity) and by the local provider,
which writes the same document into each instance's directory (``metadata="cdrom"``, how
``linuxkit run`` hands user-data to a local VM). The emulators read documents back
(:func:`host_services`, :func:`userdata_files`) to boot them as host processes.

Placeholders in service commands and environment are expanded to the paths they have *inside*
a LinuxKit instance: ``{config}`` → ``/run/config`` and ``{data}`` → ``/var/lib/infra``. The
member's own values, ``{address}`` and ``{name}``, are known only at boot: a service that uses
them runs under a small POSIX ``sh`` wrapper that reads them from the metadata the instance was
given (``/run/config/infra/address`` and ``/run/config/infra/name`` from infra's user-data; else
``/run/config/local_ipv4`` and ``/run/config/hostname`` as LinuxKit's metadata package writes
them on EC2 and GCE; else ``0.0.0.0``, every interface of the VM) and then ``exec`` s the
service's command. The service's container image must therefore have ``/bin/sh``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import yaml

from reconciler.core.model import ENV_NAME_RE, ConfigFile, Service, secret_env_file

#: Pinned LinuxKit component images. These are *pins*, not discovered at run time: LinuxKit
#: publishes its packages under content-hash tags, and an image built from this YAML is only
#: reproducible if every component is pinned. Bump them together, deliberately, after
#: checking the new set boots (``linuxkit build`` + ``linuxkit run``). A bump changes every
#: image digest, so it rolls every pipeline-built group.
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
#: The user-data directory infra writes the member's identity into (``/run/config/infra``).
MEMBER_DIR: Final = "infra"

#: Placeholders only the booted member knows, and the shell that reads each at boot.
BOOT_VALUES: Final = {
    "address": f"$(cat {CONFIG_DIR}/{MEMBER_DIR}/address 2>/dev/null || cat {CONFIG_DIR}/local_ipv4 2>/dev/null "
               "|| echo 0.0.0.0)",
    "name": f"$(cat {CONFIG_DIR}/{MEMBER_DIR}/name 2>/dev/null || cat {CONFIG_DIR}/hostname 2>/dev/null "
            "|| hostname)",
}
_BOOT_RE = re.compile(r"\{(" + "|".join(BOOT_VALUES) + r")\}")


def expand(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{key}`` for every key of ``values`` in ``text``; other braces are left alone."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _shell_word(text: str) -> str:
    """``text`` as one sh word, with ``{address}``/``{name}`` read from the variables set at boot."""
    parts: list[str] = []
    pos = 0
    for m in _BOOT_RE.finditer(text):
        if m.start() > pos:
            parts.append(shlex.quote(text[pos : m.start()]))
        parts.append(f'"${{infra_{m.group(1)}}}"')
        pos = m.end()
    if pos < len(text) or not parts:
        parts.append(shlex.quote(text[pos:]))
    return "".join(parts)


def _boot_wrapper(command: list[str], env: list[tuple[str, str]],
                  secrets: Sequence[tuple[str, str]] = ()) -> list[str]:
    """``sh -c`` that reads the boot values, exports ``env`` and the ``secrets`` (name, file: read
    from the file now; a missing file stops the service) and execs ``command``."""
    used = sorted({m.group(1) for word in [*command, *(v for _, v in env)] for m in _BOOT_RE.finditer(word)})
    lines = ["set -eu", *(f"infra_{key}={BOOT_VALUES[key]}" for key in used)]
    for key in [*(k for k, _ in env), *(k for k, _ in secrets)]:
        # names were checked where declared (Service.env, secret_env); never splice one that is not
        if not ENV_NAME_RE.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
    lines += [f"export {key}={_shell_word(value)}" for key, value in env]
    for key, path in secrets:  # the assignment fails (set -e) when the file is missing
        lines += [f"{key}=\"$(cat {shlex.quote(path)})\"", f"export {key}"]
    lines.append("exec " + " ".join(_shell_word(word) for word in command))
    return ["/bin/sh", "-c", "\n".join(lines) + "\n"]


def _service(svc: Service) -> dict[str, Any]:
    paths = {"config": CONFIG_DIR, "data": DATA_DIR}
    command = [expand(arg, paths) for arg in svc.command]
    env = [(k, expand(v, paths)) for k, v in sorted(svc.env.items())]
    late = [(k, v) for k, v in env if _BOOT_RE.search(v)]
    secrets = [(k, f"{CONFIG_DIR}/{secret_env_file(svc.name, k)}") for k in svc.secret_env]
    entry: dict[str, Any] = {"name": svc.name, "image": svc.image}
    if late or secrets or any(_BOOT_RE.search(arg) for arg in command):
        entry["command"] = _boot_wrapper(command, late, secrets)
        env = [(k, v) for k, v in env if (k, v) not in late]
    else:
        entry["command"] = command
    entry["net"] = "host"
    entry["binds"] = [f"{CONFIG_DIR}:{CONFIG_DIR}:ro", f"{DATA_DIR}/{svc.name}:{DATA_DIR}"]
    entry["runtime"] = {"mkdir": [f"{DATA_DIR}/{svc.name}"]}
    if env:
        entry["env"] = [f"{k}={v}" for k, v in env]
    return entry


def document(services: Iterable[Service], *, metadata: str) -> dict[str, Any]:
    """The LinuxKit configuration of an image running ``services`` (see the module docstring).

    Raises ValueError when ``metadata`` is not a source the ``metadata`` package knows.
    """
    if metadata not in METADATA_PROVIDERS:
        known = ", ".join(sorted(METADATA_PROVIDERS))
        raise ValueError(f"unknown LinuxKit metadata provider {metadata!r}; known: {known}")
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
        "services": [_service(svc) for svc in services],
    }


def dump(doc: Mapping[str, Any], *, header: str = "") -> str:
    """``doc`` as LinuxKit YAML (keys in LinuxKit's order), after an optional comment header."""
    return header + yaml.safe_dump(dict(doc), sort_keys=False, width=1000)


def render(services: Iterable[Service], *, metadata: str, title: str = "") -> str:
    """The LinuxKit YAML of an image running ``services``, user-data fetched from ``metadata``.

    ``metadata`` is the ``linuxkit/metadata`` provider argument (``"cdrom"`` for a local VM,
    ``"aws"``, ``"gcp"``...). Raises ValueError for an unknown one. The output contains no
    member data and no file contents: those travel as user-data.
    """
    header = (f"# {title}\n" if title else "") + (
        "# Rendered by infra; component images are pinned in reconciler/linuxkit.py.\n"
    )
    return dump(document(services, metadata=metadata), header=header)


class DocumentError(ValueError):
    """A LinuxKit document or user-data that cannot be booted as host processes."""


def _host(text: str) -> str:
    return text.replace(CONFIG_DIR, "{config}").replace(DATA_DIR, "{data}")


def host_services(document: Mapping[str, Any]) -> tuple[Service, ...]:
    """The services of a LinuxKit document as host commands: the inverse of :func:`document`.

    ``/run/config`` and ``/var/lib/infra`` become the ``{config}`` and ``{data}`` placeholders a
    provider expands to a machine's directories (the boot-time wrapper included, so it reads the
    machine's ``infra/address``); commands run as written, from the host's PATH.
    """
    out = []
    for svc in document.get("services") or []:
        if not isinstance(svc, Mapping) or "name" not in svc or "image" not in svc:
            raise DocumentError(f"a service of the document is not a LinuxKit image entry: {svc!r}")
        env = {}
        for item in svc.get("env") or []:
            key, _, value = str(item).partition("=")
            env[key] = _host(value)
        out.append(Service(name=str(svc["name"]), image=str(svc["image"]),
                           command=tuple(_host(str(a)) for a in svc.get("command") or ()), env=env))
    return tuple(out)


def userdata_files(userdata: Mapping[str, Any], prefix: str = "") -> tuple[ConfigFile, ...]:
    """LinuxKit metadata JSON (``{"dir": {"entries": {"f": {"content", "perm"}}}}``) as files.

    The inverse of :meth:`reconciler.core.model.MemberSpec.userdata`; files readable by their owner
    only are secrets. Raises DocumentError on a malformed tree.
    """
    out: list[ConfigFile] = []
    for name, entry in userdata.items():
        if not isinstance(entry, Mapping):
            raise DocumentError(f"user-data entry {prefix}{name!r} is not an object")
        path = f"{prefix}{name}"
        if "entries" in entry:
            out.extend(userdata_files(entry["entries"], path + "/"))
        elif "content" in entry:
            try:
                mode = int(str(entry.get("perm", "0644")), 8)
            except ValueError:
                raise DocumentError(f"user-data entry {path!r}: perm is not octal") from None
            out.append(ConfigFile(path=path, content=str(entry["content"]), mode=mode, secret=not mode & 0o077,
                                  in_spec=False))
    return tuple(out)
