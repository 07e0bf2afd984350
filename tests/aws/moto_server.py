"""A moto server for trying ``stacks/etcd-aws.py`` by hand and for the aws end-to-end tests.

``python -m tests.aws.moto_server --port 5000`` runs moto's server on 127.0.0.1 with the test
world's fidelity fixes (:mod:`tests.aws.moto_fidelity`), refusing unknown AMIs and instance
types as EC2 does and without moto's default AMIs; with ``--world`` (the default) it also creates
a VPC with two subnets in two zones and a security group (:func:`tests.aws.moto_world.build`).
It then prints the shell exports a client needs, one ``export NAME=value`` line each, and a
line ``# ready``, and runs until SIGTERM or Ctrl-C. ``--call-log FILE`` appends the name of every
API action it answers (``DescribeImages``, ``PutSnapshotBlock`` ...) to FILE, one a line, so a
test or bench can count the calls a CLI run made. Tests only: it is a stand-in for EC2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running(*flags: str, stderr: IO[str] | int = subprocess.DEVNULL) -> Iterator[dict[str, str]]:
    """This server as a child process on a free loopback port (``flags`` added to its command
    line); yields the exports it printed before ``# ready``, and stops it on the way out.
    Used by the benches that time the CLI against it (``bench/images.py``, ``bench/startup.py``)."""
    from tests.exports import read_exports

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tests.aws.moto_server", "-p", str(port), *flags], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert server.stdout is not None
        yield read_exports(server.stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def child(argv: list[str], log_path: Path) -> Iterator[str]:
    """``argv`` + ``-p PORT`` (a moto server of some kind) as a child process on a free loopback
    port, its output in ``log_path``; yields its URL once it accepts connections, then stops it.
    Used by the aws end-to-end tests (this module's server, and moto's own bare one)."""
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log_path.open("w") as log:
        proc = subprocess.Popen([*argv, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{argv} did not start within 60 s"
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _log_calls(path: str) -> None:
    from moto.core.responses import BaseResponse

    original = BaseResponse.call_action
    lock = threading.Lock()

    def call_action(self: BaseResponse) -> object:
        with lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{self._get_action()}\n")
        return original(self)

    BaseResponse.call_action = call_action  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.aws.moto_server", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--no-world", dest="world", action="store_false", help="create no VPC, subnets or group")
    parser.add_argument("--call-log", help="append each answered API action to this file")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("the moto server listens on loopback only (127.0.0.0/8)")
    os.environ.update({"MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "MOTO_ENABLE_AMI_VALIDATION": "true",
                       "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"})
    from tests.aws import moto_fidelity, moto_world

    for key, value in moto_world.FAKE_ENV.items():
        os.environ[key] = value
    moto_fidelity.apply(setattr)
    if args.call_log:
        _log_calls(args.call_log)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    url = f"http://{args.host}:{args.port}"
    exports = {"AWS_ENDPOINT_URL": url, **{k: v for k, v in moto_world.FAKE_ENV.items() if k.startswith("AWS_")},
               "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
    if args.world:
        from providers.aws.session import new_session

        ec2 = new_session().client("ec2", region_name=moto_world.REGION, endpoint_url=url)
        world = moto_world.build(ec2)
        exports["INFRA_AWS_SUBNETS"] = ",".join(world.subnets)
        exports["INFRA_AWS_SECURITY_GROUPS"] = world.security_group
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")
    print("# ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
