"""The ``infra daemon`` command: its options, and the process it starts.

Imported by :mod:`reconciler.cli` at start-up (``infra --help`` lists it), so this module's top
level imports only ``click``; the daemon's parts are imported when the command runs.
"""

from __future__ import annotations

import click


@click.command("daemon")
@click.argument("stack_files", metavar="STACK...", nargs=-1, required=True)
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between passes of each stack.")
@click.option("--metrics-addr", default="127.0.0.1:9464", show_default=True,
              help="HOST:PORT for /metrics and /healthz (port 0: any free port; 'none' to disable).")
@click.option("--http-token-file", type=click.Path(dir_okay=False),
              help="A file holding a bearer token every request to the metrics address must carry "
                   "(required to listen beyond loopback).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: readable text or JSON objects.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--lock", "lock", default="file", show_default=True, metavar="file|etcd://HOST:PORT",
              envvar="INFRA_COORDINATION",
              help="Who may write: the local file lock, or a lease in a coordinating etcd (several daemons, "
                   "one leader per stack). Default: $INFRA_COORDINATION when set, as every command.")
@click.option("--lock-ttl", default=10, show_default=True, type=click.IntRange(2, 3600),
              help="Seconds an etcd leader's lease lives without keepalive (hand-over time).")
@click.option("--lock-cacert", type=click.Path(dir_okay=False), envvar="INFRA_COORDINATION_CACERT",
              help="CA bundle of the coordinating etcd (TLS).")
@click.option("--lock-cert", type=click.Path(dir_okay=False), envvar="INFRA_COORDINATION_CERT",
              help="Client certificate for the coordinating etcd.")
@click.option("--lock-key", type=click.Path(dir_okay=False), envvar="INFRA_COORDINATION_KEY",
              help="Key of --lock-cert.")
@click.option("--lock-user", envvar="INFRA_COORDINATION_USER",
              help="infra's user in the coordinating etcd, when its RBAC is on.")
@click.option("--lock-password-file", type=click.Path(dir_okay=False), envvar="INFRA_COORDINATION_PASSWORD_FILE",
              help="A file holding --lock-user's password (its first line).")
@click.option("--grace", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Seconds allowed on SIGTERM/SIGINT for changes in flight to finish.")
@click.option("--backoff-max", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Longest wait after repeated failed passes (backoff doubles from 1s).")
@click.option("--stuck-after", type=click.FloatRange(0.1), default=None,
              help="/healthz fails when a running pass shows no progress for this long [default: --timeout + 60].")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Changes in flight at once (cattle groups).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds allowed per change, retries included.")
def daemon_command(stack_files: tuple[str, ...], interval: float, metrics_addr: str, http_token_file: str | None,
                   log_format: str,
                   log_level: str, lock: str, lock_ttl: int, lock_cacert: str | None, lock_cert: str | None,
                   lock_key: str | None, lock_user: str | None, lock_password_file: str | None, grace: float,
                   backoff_max: float, stuck_after: float | None,
                   concurrency: int, timeout: float) -> None:
    """Reconcile stacks for ever: every interval and when a stack file changes.

    \b
      infra daemon stacks/etcd-local.py
      curl 127.0.0.1:9464/metrics; curl 127.0.0.1:9464/healthz
      infra daemon stacks/etcd-local.py --lock etcd://10.0.0.5:2379   # one leader per stack

    While it runs the daemon is the stacks' one writer: 'infra apply' fails at once naming it.
    SIGTERM/SIGINT finish the changes in flight, release the locks and exit 0.
    """
    from reconciler.daemon.leader import parse_lock
    from reconciler.daemon.log import EventLog
    from reconciler.daemon.process import Daemon, parse_addr, read_token
    from reconciler.daemon.worker import Settings
    from reconciler.kit import coordination, secretstore
    from reconciler.kit.coordination import etcd_client

    etcd = parse_lock(lock, cacert=lock_cacert, cert=lock_cert, key=lock_key, user=lock_user,
                      password_file=lock_password_file)
    if etcd is not None and etcd.user:
        from reconciler.kit.coordination import check_login

        check_login(etcd)  # a refused login fails the start (exit 1); an etcd away is waited for
    addr = parse_addr(metrics_addr)
    token = read_token(http_token_file, addr)
    # Daemons that lead through an etcd share the stacks' CA and secrets there (INFRA_SECRETS_KEY).
    secrets = (secretstore.EtcdSecretStore(etcd_client(etcd, timeout=5.0), secretstore.load_key(), where=str(etcd))
               if etcd is not None else secretstore.from_environment())
    settings = Settings(interval=interval, backoff_max=backoff_max, concurrency=concurrency, timeout=timeout,
                        stuck_after=stuck_after or timeout + 60.0, secrets=secrets,
                        coordination=etcd or coordination.from_environment())
    log = EventLog(log_format, level=log_level)
    daemon = Daemon(stack_files, settings=settings, log=log, lock="etcd" if etcd else "file", lock_ttl=lock_ttl,
                    etcd=etcd, metrics_addr=addr, grace=grace, http_token=token)
    raise SystemExit(daemon.run())
