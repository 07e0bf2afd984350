"""What ``infra image push`` costs when every image is already there, beside a no-op ``infra plan``.

For ``stacks/etcd-gcp.py`` against the fake Compute and Cloud Storage APIs (in this process) and
``stacks/etcd-aws.py`` against the tests' moto server (a child process), both on 127.0.0.1: the
bench registers each group's image at the provider itself, labelled/tagged with its digest as a
push would (so nothing is built: no linuxkit is needed), applies the stack once, then times the
CLI (median of ``--rounds``) and counts the API calls each command made per image. The goal is
one lookup per image and no upload. It never passes or fails on time.

    python bench/images.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.engine.engine import Engine  # noqa: E402
from reconciler.engine.loader import load_stack  # noqa: E402
from tests.aws import moto_server, moto_world  # noqa: E402
from tests.gcp_fake import FakeCompute  # noqa: E402

GCP_STACK = ROOT / "stacks" / "etcd-gcp.py"
AWS_STACK = ROOT / "stacks" / "etcd-aws.py"
BUCKET = "my-project-infra-images"


def infra(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    exe = shutil.which("infra") or "infra"
    start = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300, check=False,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"infra {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc


def images_of(stack_file: Path) -> list[Any]:
    engine = Engine.open(load_stack(str(stack_file)), root=Path(tempfile.mkdtemp(prefix="infra-bench-")))
    try:
        return [s.spec for s in engine.images()]
    finally:
        engine.close()


def timed(env: dict[str, str], rounds: int, count: Any, *args: str) -> tuple[float, Counter[str]]:
    times = []
    calls: Counter[str] = Counter()
    for _ in range(rounds):
        before = count()
        seconds, _ = infra(env, *args)
        times.append(seconds)
        calls = count() - before
    return statistics.median(times), calls


def row(what: str, seconds: float, calls: Counter[str], images: int, lookups: tuple[str, ...],
        uploads: tuple[str, ...]) -> None:
    looked = sum(calls[k] for k in lookups)
    sent = sum(calls[k] for k in uploads)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    print(f"{what:<34} {seconds:6.2f} s   lookups/image {looked / images:.1f}   uploads {sent}   ({shown})")


def gcp(rounds: int, state: Path) -> None:
    with FakeCompute(op_delay=0.05, boot_delay=0.05) as fake:
        fake.storage.add_bucket(BUCKET)
        env = {**os.environ, **fake.env(), "INFRA_STATE_DIR": str(state / "gcp"), "NO_COLOR": "1",
               "INFRA_NETWORK_ALLOW": "127.0.0.0/8", "INFRA_GCP_IMAGE_BUCKET": BUCKET}
        os.environ.update(fake.env())
        images = images_of(GCP_STACK)
        for image in images:
            fake.add_image("my-project", image.name, f"infra-{image.group}", image.labels)
        infra(env, "apply", str(GCP_STACK), "--yes")

        def count() -> Counter[str]:
            return Counter({**fake.call_counts(), **fake.storage.calls})

        uploads = ("images.insert", "storage.objects.insert")
        push = timed(env, rounds, count, "image", "push", str(GCP_STACK))
        plan = timed(env, rounds, count, "plan", str(GCP_STACK), "--detailed-exitcode")
        print(f"gcp (fake Compute + Cloud Storage), {len(images)} images, {rounds} rounds, median:")
        row("  infra image push (all present)", *push, len(images), ("images.list",), uploads)
        row("  infra plan (no-op)", *plan, len(images), ("images.list",), uploads)
        infra(env, "destroy", str(GCP_STACK), "--yes")
        for key in fake.env():
            del os.environ[key]


def aws(rounds: int, state: Path) -> None:
    call_log = state / "moto-calls.log"
    with open(state / "moto.log", "w") as log, moto_server.running("--call-log", str(call_log), stderr=log) as exports:
        env = {**os.environ, **exports, "INFRA_STATE_DIR": str(state / "aws"), "NO_COLOR": "1",
               "INFRA_AWS_HEALTH_TIMEOUT": "3"}
        os.environ.update(exports)
        from providers.aws.session import new_session

        ec2 = new_session().client("ec2", region_name=moto_world.REGION, endpoint_url=exports["AWS_ENDPOINT_URL"])
        images = images_of(AWS_STACK)
        for image in images:
            ec2.register_image(Name=image.name, TagSpecifications=[{"ResourceType": "image", "Tags": [
                {"Key": k, "Value": v} for k, v in image.labels.items()]}])
        infra(env, "apply", str(AWS_STACK), "--yes")

        def count() -> Counter[str]:
            return Counter(call_log.read_text().split()) if call_log.exists() else Counter()

        uploads = ("StartSnapshot", "PutSnapshotBlock", "RegisterImage")
        push = timed(env, rounds, count, "image", "push", str(AWS_STACK))
        plan = timed(env, rounds, count, "plan", str(AWS_STACK), "--detailed-exitcode")
        print(f"aws (moto server), {len(images)} images, {rounds} rounds, median:")
        row("  infra image push (all present)", *push, len(images), ("DescribeImages",), uploads)
        row("  infra plan (no-op)", *plan, len(images), ("DescribeImages",), uploads)
        infra(env, "destroy", str(AWS_STACK), "--yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["gcp", "aws"])
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="infra-bench-images-"))
    try:
        if args.only in (None, "gcp"):
            gcp(args.rounds, state)
        if args.only in (None, "aws"):
            aws(args.rounds, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print("goal: 1 lookup per image and 0 uploads for a push with every image present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
