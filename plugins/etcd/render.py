"""Renders an etcd member's configuration files and its service. Pure: no I/O.

Called by :meth:`plugins.etcd.role.EtcdRole.expand` and ``before_create``. A member receives,
under its config directory (LinuxKit's ``/run/config``, the local provider's ``config/``):

=========================  =======  ==========================================================
``etcd/etcd.flags``        in spec  settings that do not depend on the member's address: timeouts,
                                    user flags. Changing it rolls the cluster.
``etcd/cluster.flags``     runtime  this member's name and URLs, ``initial-cluster`` and
                                    ``initial-cluster-state``, and the peer name it requires
                                    (``--peer-cert-allowed-cn``): they differ between members of
                                    one spec, so they stay out of the spec hash.
``etcd/ca.crt``            runtime  the stack's CA certificate.
``etcd/member.crt``        runtime  the certificate of its client port, SAN = its address (server,
                                    and client for etcd's own gateway dialling it). Its name is the
                                    member's, which is no etcd user: it opens no data.
``etcd/member.key``        secret   its private key (0600), new for every instance.
``etcd/peer.crt``          runtime  its peer certificate: SAN = its address, common name
                                    :func:`peer_name` (the only name its peers accept).
``etcd/peer.key``          secret   its private key (0600), new for every instance.
``etcd/revoked.crl``       runtime  the CA's revocation list (certificates of deleted members), checked
                                    by etcd on every client and peer handshake.
=========================  =======  ==========================================================

A ``.flags`` file holds one ``--name=value`` argument per line. etcd 3.4 reads its revocation list
and the required peer name only from flags (its configuration file has no such settings, and it
ignores every flag once ``--config-file`` is given), and the config and data directories are
known only where the member runs (``/run/config`` and ``/var/lib/infra`` in LinuxKit,
per-instance directories locally). So the service is a POSIX ``sh`` wrapper: it reads each line
of the two files as one argument (no word splitting, no expansion: a value cannot become a
command) and ``exec`` s etcd with them and the path flags. Its arguments are the
provider-expanded ``{config}`` and ``{data}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from plugins.etcd.config import EtcdConfig, FlagValue
from reconciler.core.model import ConfigFile, Service

SETTINGS_FILE = "etcd/etcd.flags"
CLUSTER_FILE = "etcd/cluster.flags"
CA_FILE = "etcd/ca.crt"
CERT_FILE = "etcd/member.crt"
KEY_FILE = "etcd/member.key"
PEER_CERT_FILE = "etcd/peer.crt"
PEER_KEY_FILE = "etcd/peer.key"
CRL_FILE = "etcd/revoked.crl"

#: Reads the two flag files, one argument a line, and starts etcd; ``$1`` = config dir, ``$2`` = data dir.
WRAPPER = r"""set -eu
config="$1"; data="$2"
umask 077
mkdir -p "$data/etcd"
set --
for file in "$config/etcd/etcd.flags" "$config/etcd/cluster.flags"; do
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ""|"#"*) continue;; esac
    set -- "$@" "$line"
  done < "$file"
done
e="$config/etcd"
exec etcd "$@" --data-dir="$data/etcd" \
  --cert-file="$e/member.crt" --key-file="$e/member.key" --trusted-ca-file="$e/ca.crt" \
  --client-cert-auth=true --client-crl-file="$e/revoked.crl" \
  --peer-cert-file="$e/peer.crt" --peer-key-file="$e/peer.key" --peer-trusted-ca-file="$e/ca.crt" \
  --peer-client-cert-auth=true --peer-crl-file="$e/revoked.crl"
"""


def peer_name(stack: str, group: str) -> str:
    """The common name of every peer certificate of one cluster (what its peers require)."""
    return f"{group}.{stack}.etcd-peer"[:64]


def _flag(name: str, value: FlagValue) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list):
        text = ",".join(value)
    else:
        text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise ValueError(f"etcd flag {name}: a value cannot hold a line break")
    return f"--{name}={text}"


def flags_text(header: str, flags: Mapping[str, FlagValue]) -> str:
    """A ``.flags`` file: a comment, then one ``--name=value`` a line, in the given order."""
    return "".join([f"# {header}\n", *(f"{_flag(k, v)}\n" for k, v in flags.items())])


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
        debian_package="etcd-server",
    )


def settings(cfg: EtcdConfig) -> str:
    """``etcd/etcd.flags``: everything that does not depend on the member's address."""
    doc: dict[str, FlagValue] = {
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
        # The only password is root's, 32 random bytes: bcrypt's work factor adds nothing against
        # guessing it and costs every authentication (infra's gateway token) CPU on the members.
        "bcrypt-cost": 4,
    }
    doc.update(cfg.flags)
    return flags_text(f"etcd {cfg.version} settings rendered by infra's etcd role (address-independent part)", doc)


def initial_cluster(peers: Mapping[str, Sequence[str]]) -> str:
    """``name=url,name=url`` in name order (every peer URL of every member)."""
    return ",".join(f"{name}={url}" for name in sorted(peers) for url in peers[name])


def cluster(
    cfg: EtcdConfig, *, name: str, address: str, peers: Mapping[str, Sequence[str]], state: str, token: str,
    peer_cn: str | None = None,
) -> str:
    """``etcd/cluster.flags``: this member's identity and URLs, how it joins, and (``peer_cn``)
    the one peer certificate name it accepts."""
    doc: dict[str, FlagValue] = {
        "name": name,
        "listen-client-urls": client_url(cfg, address),
        "advertise-client-urls": client_url(cfg, address),
        "listen-peer-urls": peer_url(cfg, address),
        "initial-advertise-peer-urls": peer_url(cfg, address),
        "initial-cluster": initial_cluster(peers),
        "initial-cluster-state": state,
        "initial-cluster-token": token,
    }
    if peer_cn:
        doc["peer-cert-allowed-cn"] = peer_cn
    return flags_text(f"how {name} joins its cluster ({state}); rendered by infra's etcd role", doc)


def settings_file(cfg: EtcdConfig) -> ConfigFile:
    return ConfigFile(path=SETTINGS_FILE, content=settings(cfg))


def cluster_file(content: str) -> ConfigFile:
    return ConfigFile(path=CLUSTER_FILE, content=content, in_spec=False)


def with_peer_cn(content: str, peer_cn: str) -> str:
    """``etcd/cluster.flags`` (as :func:`cluster` rendered it) requiring ``peer_cn`` of peers."""
    kept = [line for line in content.splitlines() if not line.startswith("--peer-cert-allowed-cn=")]
    return "\n".join([*kept, f"--peer-cert-allowed-cn={peer_cn}"]) + "\n"


def tls_files(ca_pem: str, crl_pem: str, cert_pem: str, key_pem: str, peer_cert_pem: str,
              peer_key_pem: str) -> tuple[ConfigFile, ...]:
    return (
        ConfigFile(path=CA_FILE, content=ca_pem, in_spec=False),
        ConfigFile(path=CRL_FILE, content=crl_pem, in_spec=False),
        ConfigFile(path=CERT_FILE, content=cert_pem, in_spec=False),
        ConfigFile(path=KEY_FILE, content=key_pem, mode=0o600, secret=True, in_spec=False),
        ConfigFile(path=PEER_CERT_FILE, content=peer_cert_pem, in_spec=False),
        ConfigFile(path=PEER_KEY_FILE, content=peer_key_pem, mode=0o600, secret=True, in_spec=False),
    )
