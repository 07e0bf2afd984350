"""etcd-gcp: a 3-member etcd cluster (mutual TLS) watched by one Prometheus, on Compute Engine.

The same cluster as ``stacks/etcd-local.py``, on GCE VMs booted from LinuxKit images. Each VM
reads its configuration from the ``user-data`` metadata key (LinuxKit's metadata package);
Prometheus finds the etcd members with its own GCE service discovery, filtered on the stack's
labels, so no address is written into its configuration.

    export INFRA_GCP_PROJECT=my-project          # your project (credentials: gcloud ADC)
    infra validate stacks/etcd-gcp.py            # machine type and image families exist?
    infra apply stacks/etcd-gcp.py --yes
    infra status stacks/etcd-gcp.py

Against the in-repo fake of the Compute API instead of real GCP:

    python -m tests.gcp_fake --port 8089 &
    INFRA_GCP_ENDPOINT=http://127.0.0.1:8089 infra apply stacks/etcd-gcp.py --yes

etcd members get fixed internal addresses from ``address_range`` (etcd's static bootstrap and its
certificates need them before the VMs exist). 10.128.15.0/28 is the top of us-central1's
auto-mode subnet (10.128.0.0/20); keep it free of other VMs, or pick a range of your subnet that
is. ``infra`` must reach those addresses (run it inside the VPC, or through a VPN) to check etcd's
health and change its membership.
"""

import os

from reconciler import Group, Stack

PROJECT = os.environ.get("INFRA_GCP_PROJECT", "my-project")
ZONES = ["us-central1-a", "us-central1-b", "us-central1-c"]

stack = Stack(
    name="etcd-gcp",
    provider="gcp",
    provider_config={
        "project": PROJECT,
        "zones": ZONES,
        # Firewall rules for etcd (2379/2380) and Prometheus (9090) can target this tag.
        "tags": ["infra-etcd-gcp"],
    },
    groups=(
        Group(
            name="etcd",
            size=3,
            role="etcd",
            # Built by the LinuxKit image pipeline; the newest image of the family is used.
            image="family/infra-etcd",
            machine_type="e2-small",
            config={"version": "3.4.23"},
            provider_config={"address_range": "10.128.15.0/28"},
        ),
        Group(
            name="prometheus",
            size=1,
            role="prometheus",
            image="family/infra-prometheus",
            machine_type="e2-small",
            config={"watch": ["etcd"]},
            # Prometheus's GCE service discovery reads the instance list with the VM's identity.
            provider_config={
                "service_account": "default",
                "scopes": ["https://www.googleapis.com/auth/compute.readonly"],
            },
        ),
    ),
)
