"""``infra emulator gcp``: the GCE emulator in the foreground.

Called through the ``infra.emulators`` entry point by the CLI. It serves the Compute and Cloud
Storage APIs on 127.0.0.1 (:mod:`providers.gcp.emulator.compute`), creates the image bucket,
boots instances (:mod:`providers.gcp.emulator.machines`) on the loopback subnetwork
``127.128.0.0/20`` (mirroring GCE's ``10.128.0.0/20``), prints the shell exports a client needs,
one ``export NAME=value`` line each (among them ``INFRA_GCP_ACCESS_TOKEN``, the random credential
every request must carry), then ``# ready``, and runs until SIGTERM or Ctrl-C, when it
stops every instance it booted and exits 0.

``machines="vm"`` (``--machines vm``): instances are QEMU VMs booted from their pushed disks
(:class:`reconciler.kit.vmhost.VmHost`) on a bridge holding GCE's own subnetwork ``10.128.0.0/20``
(gateway 10.128.0.1) and the metadata server 169.254.169.254, refused outside a private network
namespace. The API is then served on the gateway address (the VMs' Prometheus discovers through it),
the exports name that address, the real address range ``10.128.15.0/28``, the Debian image builder
(``INFRA_IMAGE_BUILDER=debian``: a VM boots a real disk) and ``INFRA_NETWORK_ALLOW`` with the
subnetwork: all only inside that namespace.
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
#: In VM mode: GCE's own subnetwork of us-central1, its gateway, and the stacks' range.
VM_SUBNET = "10.128.0.0/20"
VM_GATEWAY = "10.128.0.1"
VM_ADDRESS_RANGE = "10.128.15.0/28"
VM_BRIDGE = "infra-gce"


def exports(compute: FakeCompute, *, vm: bool = False) -> dict[str, str]:
    """The shell exports a client needs; the two tokens are new on every run."""
    out = {
        **compute.env(),
        "INFRA_GCS_ENDPOINT": compute.url,
        "INFRA_GCP_PROJECT": PROJECT,
        "INFRA_GCP_IMAGE_BUCKET": BUCKET,
        "INFRA_GCP_ADDRESS_RANGE": ADDRESS_RANGE,
        "INFRA_NETWORK_ALLOW": "127.0.0.0/8",
    }
    if vm:
        out.update({"INFRA_GCP_ADDRESS_RANGE": VM_ADDRESS_RANGE, "INFRA_IMAGE_BUILDER": "debian",
                    "INFRA_NETWORK_ALLOW": f"127.0.0.0/8,{VM_SUBNET}"})
    return out


def run(port: int, state: Path, machines: str = "process", vm_memory: int = 512) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop."""
    from providers.gcp.emulator.machines import GceMachines

    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    vm = machines == "vm"
    vms = None
    if vm:
        from reconciler.kit.vmhost import VmHost

        holder: list[GceMachines] = []
        vms = VmHost(state / "vm", bridge=VM_BRIDGE, subnets=[VM_SUBNET], flavor="gcp", memory_mib=vm_memory,
                     metadata=lambda address: holder[0].guest(address) if holder else None,
                     log=lambda m: print(f"# {m}", file=sys.stderr, flush=True)).start()
    compute = FakeCompute(port=port, op_delay=0.05, boot_delay=0.1, wait_max=60.0,
                          address_prefix="10.128" if vm else "127.128", host=VM_GATEWAY if vm else "127.0.0.1")
    compute.storage.add_bucket(BUCKET, PROJECT)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = GceMachines(compute, state, interval=0.1, vms=vms,
                          log=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    if vm:
        holder.append(watcher)
    try:
        with compute:
            watcher.start()
            try:
                for key, value in exports(compute, vm=vm).items():
                    print(f"export {key}={shlex.quote(value)}")
                print("# ready", flush=True)
                stop.wait()
            finally:
                watcher.stop()
    finally:
        if vms is not None:
            vms.stop()
    return 0
