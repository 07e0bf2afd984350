"""etcd-gcp: a 3-member etcd cluster (mutual TLS) watched by one Prometheus, on Compute Engine.

The same cluster as ``stacks/etcd-local.py``, on GCE VMs booted from LinuxKit images that infra
builds from the declaration itself: each group's LinuxKit document (kernel, init, the metadata
package, its services) is built with ``linuxkit build --format gcp``, uploaded to
``image_bucket`` and registered as ``infra-<group>-<digest>`` (``infra image list`` shows them);
a change to a service rolls the group, an unchanged declaration pushes nothing. Each VM reads
its own configuration from the ``user-data`` metadata key (LinuxKit's metadata package);
Prometheus finds the etcd members with its own GCE service discovery, filtered on the stack's
labels, so no address is written into its configuration.

    export INFRA_GCP_PROJECT=my-project          # your project (credentials: gcloud ADC)
    export INFRA_GCP_IMAGE_BUCKET=my-project-infra-images   # a bucket of the project
    infra validate stacks/etcd-gcp.py            # linuxkit, machine type, bucket?
    infra apply stacks/etcd-gcp.py --yes         # builds and pushes the images first
    infra status stacks/etcd-gcp.py

Building needs the ``linuxkit`` CLI (and Docker) on PATH, or ``INFRA_LINUXKIT``. On this machine
instead of GCP, against infra's GCE emulator, whose instances boot as local processes on loopback
addresses (it prints the exports infra needs, then ``# ready``; without linuxkit it boots the
images' LinuxKit YAML itself):

    infra emulator gcp --port 8089 > gcp.env &
    until grep -q '^# ready' gcp.env; do sleep 0.2; done; . ./gcp.env
    infra apply stacks/etcd-gcp.py --yes
    eval "$(infra env stacks/etcd-gcp.py)"; etcdctl endpoint health --cluster
    infra image list stacks/etcd-gcp.py
    infra destroy stacks/etcd-gcp.py --yes --images

etcd members get fixed internal addresses from ``address_range`` (etcd's static bootstrap and its
certificates need them before the VMs exist; ``INFRA_GCP_ADDRESS_RANGE`` overrides it, the
emulator exports its loopback mirror 127.128.15.0/28). 10.128.15.0/28 is the top of us-central1's
auto-mode subnet (10.128.0.0/20); keep it free of other VMs, or pick a range of your subnet that
is. ``infra`` must reach those addresses (run it inside the VPC, or through a VPN) to check etcd's
health and change its membership.
"""

import os

from plugins.etcd import Etcd
from plugins.prometheus import Prometheus
from reconciler import Stack

PROJECT = os.environ.get("INFRA_GCP_PROJECT", "my-project")
IMAGE_BUCKET = os.environ.get("INFRA_GCP_IMAGE_BUCKET", f"{PROJECT}-infra-images")
ADDRESS_RANGE = os.environ.get("INFRA_GCP_ADDRESS_RANGE", "10.128.15.0/28")
ZONES = ["us-central1-a", "us-central1-b", "us-central1-c"]

etcd = Etcd(
    name="etcd",
    size=3,
    # No image=: the members boot the image built from this group's LinuxKit document.
    machine_type="e2-small",
    version="3.4.23",
    provider_config={"address_range": ADDRESS_RANGE},
)

stack = Stack(
    # Who builds the images: the linuxkit CLI, or infra's Debian builder (what the emulators'
    # --machines vm export, since their VMs boot the pushed disk).
    image_builder="debian" if os.environ.get("INFRA_IMAGE_BUILDER") == "debian" else "linuxkit",
    name="etcd-gcp",
    provider="gcp",
    provider_config={
        "project": PROJECT,
        "zones": ZONES,
        # Where the LinuxKit images infra builds are uploaded before images.insert.
        "image_bucket": IMAGE_BUCKET,
        # Firewall rules for etcd (2379/2380) and Prometheus (9090) can target this tag.
        "tags": ["infra-etcd-gcp"],
    },
    groups=(
        etcd,
        Prometheus(
            name="prometheus",
            size=1,
            machine_type="e2-small",
            watch=[etcd],
            # Prometheus's GCE service discovery reads the instance list with the VM's identity.
            provider_config={
                "service_account": "default",
                "scopes": ["https://www.googleapis.com/auth/compute.readonly"],
            },
        ),
    ),
)
