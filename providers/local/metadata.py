"""Delivers a member's configuration the way LinuxKit's ``metadata`` package does.

On a LinuxKit instance, ``metadata`` fetches the user-data, keeps it as ``/run/config/userdata``
and, when it is JSON of the shape :meth:`reconciler.core.model.MemberSpec.userdata` produces, expands
it into files: a key with ``entries`` is a directory, a key with ``content`` a file written with
its ``perm``. The local provider does the same into the instance's ``config/`` directory, so a
service reads ``{config}/etcd/etcd.flags`` locally exactly as it reads
``/run/config/etcd/etcd.flags`` in the cloud. Called by :mod:`providers.local.provider`.

``config/`` and ``config/userdata`` are private (0700/0600): user-data holds secrets. Files the
member marks ``secret`` are written 0600 whatever ``perm`` says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from reconciler.core.errors import PermanentError

USERDATA = "userdata"


def _safe(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise PermanentError(f"user-data entry {where!r}: {name!r} is not a valid file name")
    return name


def _perm(entry: Mapping[str, Any], default: int, where: str) -> int:
    raw = entry.get("perm")
    if raw is None:
        return default
    try:
        perm = int(str(raw), 8)
    except ValueError:
        raise PermanentError(f"user-data entry {where!r}: perm {raw!r} is not octal") from None
    if not 0 <= perm <= 0o7777:
        raise PermanentError(f"user-data entry {where!r}: perm {raw!r} is out of range")
    return perm


def _write_file(path: Path, content: str, perm: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content.encode("utf-8"))
        os.fchmod(fd, perm)  # exact mode, whatever the umask
    finally:
        os.close(fd)


def _expand(base: Path, node: Mapping[str, Any], prefix: str, secret: Collection[str]) -> None:
    for name, entry in node.items():
        where = f"{prefix}{name}"
        _safe(name, where)
        if prefix == "" and name == USERDATA:
            raise PermanentError(f"user-data entry {where!r} would overwrite the raw user-data file")
        if not isinstance(entry, Mapping):
            raise PermanentError(f"user-data entry {where!r} is not an object")
        if "entries" in entry:
            children = entry["entries"]
            if not isinstance(children, Mapping):
                raise PermanentError(f"user-data entry {where!r}: entries is not an object")
            path = base / name
            path.mkdir(mode=0o700)
            _expand(path, children, where + "/", secret)
            os.chmod(path, _perm(entry, 0o755, where))
        elif "content" in entry:
            perm = 0o600 if where in secret else _perm(entry, 0o644, where)
            _write_file(base / name, str(entry["content"]), perm)
        else:
            raise PermanentError(f"user-data entry {where!r} has neither 'entries' nor 'content'")


def deliver(config_dir: Path, userdata: Mapping[str, Any], secret_paths: Collection[str] = ()) -> None:
    """Write ``userdata`` to ``config_dir/userdata`` and expand it into files below ``config_dir``.

    ``config_dir`` must not exist yet. ``secret_paths`` are the relative paths
    (``etcd/server.key``) to write 0600. Raises PermanentError for an entry that is not a valid
    relative file name; the half-written directory is then the caller's to remove.
    """
    config_dir.mkdir(mode=0o700)
    os.chmod(config_dir, 0o700)
    _write_file(config_dir / USERDATA, json.dumps(userdata, sort_keys=True), 0o600)
    _expand(config_dir, userdata, "", frozenset(secret_paths))
