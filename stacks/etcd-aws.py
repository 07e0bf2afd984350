"""etcd-aws: a 3-member etcd cluster (mutual TLS) watched by one Prometheus, on EC2.

The same cluster as ``stacks/etcd-local.py``, on EC2 instances booted from LinuxKit AMIs that
infra builds from the declaration itself: each group's LinuxKit document is built with
``linuxkit build --format aws`` (a raw disk), written to an EBS snapshot through the EBS direct
APIs (no S3 bucket, no vmimport role) and registered as the AMI ``infra-<group>-<digest>``
(``infra image list`` shows them); a change to a service rolls the group, an unchanged
declaration pushes nothing. Each instance reads its configuration from user-data (LinuxKit's
metadata package); Prometheus finds the etcd members with its own EC2 service discovery,
filtered on the stack's tags, so no address is written into its configuration.

    export AWS_PROFILE=...                          # or any credentials of boto3's default chain
    export INFRA_AWS_REGION=eu-west-1               # default: AWS_REGION, else us-east-1
    export INFRA_AWS_SUBNETS=subnet-0aaa...,subnet-0bbb...,subnet-0ccc...   # one per zone
    export INFRA_AWS_SECURITY_GROUPS=sg-0123...     # etcd 2379/2380 and 9090 between members
    export INFRA_AWS_PROMETHEUS_PROFILE=infra-prometheus   # instance profile: ec2:DescribeInstances
    infra validate stacks/etcd-aws.py               # linuxkit, instance types, subnets?
    infra apply stacks/etcd-aws.py --yes            # builds and pushes the AMIs first
    infra status stacks/etcd-aws.py

Building needs the ``linuxkit`` CLI (and Docker) on PATH, or ``INFRA_LINUXKIT``. On this machine
instead of AWS, against infra's EC2 emulator (moto's EC2 and EBS, whose instances boot as local
processes on loopback addresses in 127.79.0.0/16; it creates a VPC with two subnets and a
security group, prints the exports infra needs, then ``# ready``; without linuxkit it boots the
images' LinuxKit YAML itself):

    infra emulator aws --port 5000 > aws.env &
    until grep -q '^# ready' aws.env; do sleep 0.2; done; . ./aws.env
    infra apply stacks/etcd-aws.py --yes
    eval "$(infra env stacks/etcd-aws.py)"; etcdctl endpoint health --cluster
    infra image list stacks/etcd-aws.py
    infra destroy stacks/etcd-aws.py --yes --images

To pin an image instead, give the group ``image=`` an AMI id (``ami-...``) or an AMI name owned
by this account: nothing is built for it.

etcd members get fixed private addresses (``address_offset``: offset 10 and up of their subnet,
round-robin over the subnets) because etcd's static bootstrap and its certificates need them
before the instances exist. Reserve that range in each subnet (an *explicit* subnet CIDR
reservation, e.g. 10.0.0.8/29) so EC2 never gives it to another instance. ``infra`` must reach
those addresses (run it inside the VPC, or through a VPN, and set ``INFRA_NETWORK_ALLOW``
accordingly) to check etcd's health and change its membership; from outside, it creates the
cluster (bootstrap needs no etcd API) and refuses membership changes it cannot make safely.
"""

import os

from plugins.etcd import Etcd
from plugins.prometheus import Prometheus
from reconciler import Stack

REGION = os.environ.get("INFRA_AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
SUBNETS = [s for s in os.environ.get("INFRA_AWS_SUBNETS", "subnet-00000000000000001").split(",") if s]
SECURITY_GROUPS = [s for s in os.environ.get("INFRA_AWS_SECURITY_GROUPS", "").split(",") if s]
PROMETHEUS_PROFILE = os.environ.get("INFRA_AWS_PROMETHEUS_PROFILE") or None
# EC2 instances take a minute or two to boot before etcd answers.
HEALTH_TIMEOUT = float(os.environ.get("INFRA_AWS_HEALTH_TIMEOUT", "300"))

etcd = Etcd(
    name="etcd",
    size=3,
    # No image=: the members boot the AMI built from this group's LinuxKit document.
    machine_type="t3.small",
    version="3.4.23",
    health_timeout=HEALTH_TIMEOUT,
    provider_config={"address_offset": 10},
)

stack = Stack(
    # Who builds the images: the linuxkit CLI, or infra's Debian builder (what the emulators'
    # --machines vm export, since their VMs boot the pushed disk).
    image_builder="debian" if os.environ.get("INFRA_IMAGE_BUILDER") == "debian" else "linuxkit",
    name="etcd-aws",
    provider="aws",
    provider_config={
        "region": REGION,
        "subnets": SUBNETS,
        "security_group_ids": SECURITY_GROUPS,
        "instance_type": "t3.small",
        "tags": {"project": "etcd-aws"},
        # LinuxKit's metadata package reads user-data with IMDSv1 GETs only (no session token), so
        # these LinuxKit images need the metadata service to answer them: see docs/providers/aws.md.
        "metadata_tokens": "optional",
    },
    groups=(
        etcd,
        Prometheus(
            name="prometheus",
            size=1,
            machine_type="t3.small",
            watch=[etcd],
            # Prometheus's EC2 service discovery reads the instance list with the instance's role.
            provider_config={"iam_instance_profile": PROMETHEUS_PROFILE} if PROMETHEUS_PROFILE else {},
        ),
    ),
)
