"""Run the fake Compute and Cloud Storage APIs by hand: ``python -m tests.gcp_fake --port 8089``.

It creates the image bucket (``--bucket``, default ``my-project-infra-images``), prints the shell
exports a client needs (``INFRA_GCP_ENDPOINT``, ``INFRA_GCP_IMAGE_BUCKET``,
``INFRA_NETWORK_ALLOW=127.0.0.0/8``), one ``export NAME=value`` line each, then ``# ready``, and
runs until SIGTERM or Ctrl-C. Then: ``infra apply stacks/etcd-gcp.py --yes`` with those exports.
"""

from __future__ import annotations

import argparse
import signal
import threading

from tests.gcp_fake.server import DEFAULT_IMAGES, FakeCompute


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.gcp_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--op-delay", type=float, default=1.0, help="seconds an operation takes")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds in STAGING")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of 429/503 answers")
    parser.add_argument("--bucket", default="my-project-infra-images", help="the Cloud Storage bucket to create")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PROJECT/NAME[:FAMILY]",
        help="an image to serve (repeatable), in addition to the defaults",
    )
    args = parser.parse_args(argv)
    images = list(DEFAULT_IMAGES)
    for spec in args.image:
        where, _, family = spec.partition(":")
        project, _, name = where.partition("/")
        images.append((project, name, family or None))
    fake = FakeCompute(
        host=args.host,
        port=args.port,
        op_delay=args.op_delay,
        boot_delay=args.boot_delay,
        fault_rate=args.fault_rate,
        images=images,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not args.host.startswith("127."):
        parser.error("the fake listens on loopback only (127.0.0.0/8)")
    with fake:
        fake.storage.add_bucket(args.bucket)
        print(f"export INFRA_GCP_ENDPOINT={fake.url}")
        print(f"export INFRA_GCP_IMAGE_BUCKET={args.bucket}")
        print("export INFRA_NETWORK_ALLOW=127.0.0.0/8")
        print("# ready", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
