"""Renders an etcd member's configuration files and its service. Pure: no I/O.

Called by :meth:`plugins.etcd.role.EtcdRole.expand` and ``before_create``. A member receives,
under its config directory (LinuxKit's ``/run/config``, the local provider's ``config/``):

=========================  =======  ==========================================================
``etcd/etcd.conf.yml``     in spec  settings that do not depend on the member's address: TLS
                                    on, timeouts, user flags. Changing it rolls the cluster.
``etcd/cluster.yml``       runtime  this member's name and URLs, ``initial-cluster`` and
                                    ``initial-cluster-state``: differ between members of one
                                    spec, so they stay out of the spec hash.
``etcd/ca.crt``            runtime  the stack's CA certificate.
``etcd/member.crt``        runtime  the member's certificate, SAN = its address, usable both as
                                    server and as client (peers authenticate each other with it,
                                    and etcd's own gRPC gateway dials the server with it).
``etcd/member.key``        secret   its private key (0600).
=========================  =======  ==========================================================

etcd 3.4 ignores every command-line flag once ``--config-file`` is given, and its configuration
file takes only absolute (or working-directory-relative) paths, while the config and data
directories are known only where the member runs (``/run/config`` and ``/var/lib/infra`` in
LinuxKit, per-instance directories locally). So the service is a two-line POSIX ``sh`` wrapper,
the shape LinuxKit's own etcd example uses: it appends the path settings (``data-dir``, the TLS
files) to the two delivered files, writes the result to ``{data}/etcd.conf.yml`` and ``exec`` s
``etcd --config-file`` on it. Its arguments are the provider-expanded ``{config}`` and ``{data}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from plugins.etcd.config import EtcdConfig
from reconciler.core.model import ConfigFile, Service

SETTINGS_FILE = "etcd/etcd.conf.yml"
CLUSTER_FILE = "etcd/cluster.yml"
CA_FILE = "etcd/ca.crt"
CERT_FILE = "etcd/member.crt"
KEY_FILE = "etcd/member.key"

#: Assembles the final configuration and starts etcd; ``$1`` = config dir, ``$2`` = data dir.
WRAPPER = r"""set -eu
config="$1"; data="$2"
case "$config$data" in *"'"*) echo "etcd: paths containing a quote are not supported" >&2; exit 64;; esac
umask 077
mkdir -p "$data/etcd"
out="$data/etcd.conf.yml"
{
  cat "$config/etcd/etcd.conf.yml"; echo
  cat "$config/etcd/cluster.yml"; echo
  printf "data-dir: '%s/etcd'\n" "$data"
  for side in client peer; do
    printf "%s-transport-security:\n" "$side"
    printf "  trusted-ca-file: '%s/etcd/ca.crt'\n" "$config"
    printf "  cert-file: '%s/etcd/member.crt'\n" "$config"
    printf "  key-file: '%s/etcd/member.key'\n" "$config"
    printf "  client-cert-auth: true\n"
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
exec etcd --config-file "$out"
"""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_url(cfg: EtcdConfig, address: str) -> str:
    return f"https://{host_port(address, cfg.client_port)}"


def peer_url(cfg: EtcdConfig, address: str) -> str:
    return f"https://{host_port(address, cfg.peer_port)}"


def service(cfg: EtcdConfig) -> Service:
    """The etcd service: the wrapper above, run by ``/bin/sh`` in the etcd image."""
    return Service(
        name="etcd",
        image=cfg.effective_image,
        command=("/bin/sh", "-c", WRAPPER, "etcd", "{config}", "{data}"),
        ports=(cfg.client_port, cfg.peer_port),
    )


def settings(cfg: EtcdConfig) -> str:
    """``etcd/etcd.conf.yml``: everything that does not depend on the member's address."""
    doc: dict[str, object] = {
        "heartbeat-interval": cfg.heartbeat_interval_ms,
        "election-timeout": cfg.election_timeout_ms,
        # Refuse a reconfiguration that could cost the quorum (the default, stated explicitly).
        "strict-reconfig-check": True,
        # A member that rejoins after a partition does not disrupt the leader.
        "pre-vote": True,
        "enable-v2": False,
        "enable-grpc-gateway": True,
        "logger": "zap",
        "log-outputs": ["stderr"],
    }
    doc.update(cfg.flags)
    header = f"# etcd {cfg.version} settings rendered by infra's etcd role (address-independent part).\n"
    return header + yaml.safe_dump(doc, sort_keys=True)


def initial_cluster(peers: Mapping[str, Sequence[str]]) -> str:
    """``name=url,name=url`` in name order (every peer URL of every member)."""
    return ",".join(f"{name}={url}" for name in sorted(peers) for url in peers[name])


def cluster(
    cfg: EtcdConfig, *, name: str, address: str, peers: Mapping[str, Sequence[str]], state: str, token: str
) -> str:
    """``etcd/cluster.yml``: this member's identity and URLs, and how it joins."""
    doc = {
        "name": name,
        "listen-client-urls": client_url(cfg, address),
        "advertise-client-urls": client_url(cfg, address),
        "listen-peer-urls": peer_url(cfg, address),
        "initial-advertise-peer-urls": peer_url(cfg, address),
        "initial-cluster": initial_cluster(peers),
        "initial-cluster-state": state,
        "initial-cluster-token": token,
    }
    header = f"# how {name} joins its cluster ({state}); rendered by infra's etcd role\n"
    return header + yaml.safe_dump(doc, sort_keys=False)


def settings_file(cfg: EtcdConfig) -> ConfigFile:
    return ConfigFile(path=SETTINGS_FILE, content=settings(cfg))


def cluster_file(content: str) -> ConfigFile:
    return ConfigFile(path=CLUSTER_FILE, content=content, in_spec=False)


def tls_files(ca_pem: str, cert_pem: str, key_pem: str) -> tuple[ConfigFile, ...]:
    return (
        ConfigFile(path=CA_FILE, content=ca_pem, in_spec=False),
        ConfigFile(path=CERT_FILE, content=cert_pem, in_spec=False),
        ConfigFile(path=KEY_FILE, content=key_pem, mode=0o600, secret=True, in_spec=False),
    )
