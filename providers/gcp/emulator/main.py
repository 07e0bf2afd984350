"""``infra emulator gcp``: the GCE emulator in the foreground.

Called through the ``infra.emulators`` entry point by the CLI. It serves the Compute and Cloud
Storage APIs on 127.0.0.1 (:mod:`providers.gcp.emulator.compute`), creates the image bucket,
boots instances (:mod:`providers.gcp.emulator.machines`) on the loopback subnetwork
``127.128.0.0/20`` (mirroring GCE's ``10.128.0.0/20``), prints the shell exports a client needs,
one ``export NAME=value`` line each (among them ``INFRA_GCP_ACCESS_TOKEN``, the random credential
every request must carry), then ``# ready``, and runs until SIGTERM or Ctrl-C, when it
stops every instance it booted and exits 0.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from providers.gcp.emulator.compute import FakeCompute

PROJECT = "my-project"
BUCKET = "my-project-infra-images"
SUBNET = "127.128.0.0/20"
#: The fixed-address range the stacks' etcd groups use here (10.128.15.0/28 on GCE).
ADDRESS_RANGE = "127.128.15.0/28"


def exports(compute: FakeCompute) -> dict[str, str]:
    """The shell exports a client needs; the two tokens are new on every run."""
    return {
        **compute.env(),
        "INFRA_GCS_ENDPOINT": compute.url,
        "INFRA_GCP_PROJECT": PROJECT,
        "INFRA_GCP_IMAGE_BUCKET": BUCKET,
        "INFRA_GCP_ADDRESS_RANGE": ADDRESS_RANGE,
        "INFRA_NETWORK_ALLOW": "127.0.0.0/8",
    }


def run(port: int, state: Path) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop."""
    from providers.gcp.emulator.machines import GceMachines

    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    compute = FakeCompute(port=port, op_delay=0.05, boot_delay=0.1, wait_max=60.0, address_prefix="127.128")
    compute.storage.add_bucket(BUCKET, PROJECT)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    machines = GceMachines(compute, state, interval=0.1, log=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    with compute:
        machines.start()
        try:
            for key, value in exports(compute).items():
                print(f"export {key}={shlex.quote(value)}")
            print("# ready", flush=True)
            stop.wait()
        finally:
            machines.stop()
    return 0
