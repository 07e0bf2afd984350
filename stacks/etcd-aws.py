"""etcd-aws: a 3-member etcd cluster (mutual TLS) watched by one Prometheus, on EC2.

The same cluster as ``stacks/etcd-local.py``, on EC2 instances booted from LinuxKit AMIs. Each
instance reads its configuration from user-data (LinuxKit's metadata package); Prometheus finds
the etcd members with its own EC2 service discovery, filtered on the stack's tags, so no address
is written into its configuration.

    export AWS_PROFILE=...                          # or any credentials of boto3's default chain
    export INFRA_AWS_REGION=eu-west-1               # default: AWS_REGION, else us-east-1
    export INFRA_AWS_SUBNETS=subnet-0aaa...,subnet-0bbb...,subnet-0ccc...   # one per zone
    export INFRA_AWS_SECURITY_GROUPS=sg-0123...     # etcd 2379/2380 and 9090 between members
    export INFRA_AWS_PROMETHEUS_PROFILE=infra-prometheus   # instance profile: ec2:DescribeInstances
    infra validate stacks/etcd-aws.py               # AMIs, instance types, subnets exist?
    infra apply stacks/etcd-aws.py --yes
    infra status stacks/etcd-aws.py

Against a moto server instead of real AWS (fake credentials are fine):

    python -m moto.server -H 127.0.0.1 -p 5000 &
    AWS_ENDPOINT_URL=http://127.0.0.1:5000 infra apply stacks/etcd-aws.py --yes

Images are pinned: ``INFRA_AWS_ETCD_AMI`` / ``INFRA_AWS_PROMETHEUS_AMI`` take an AMI id
(``ami-...``) or an AMI name owned by this account (what the LinuxKit image pipeline registers).

etcd members get fixed private addresses (``address_offset``: offset 10 and up of their subnet,
round-robin over the subnets) because etcd's static bootstrap and its certificates need them
before the instances exist. Reserve that range in each subnet (an *explicit* subnet CIDR
reservation, e.g. 10.0.0.8/29) so EC2 never gives it to another instance. ``infra`` must reach
those addresses (run it inside the VPC, or through a VPN, and set ``INFRA_NETWORK_ALLOW``
accordingly) to check etcd's health and change its membership; from outside, it creates the
cluster (bootstrap needs no etcd API) and refuses membership changes it cannot make safely.
"""

import os

from reconciler import Group, Stack

REGION = os.environ.get("INFRA_AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
SUBNETS = [s for s in os.environ.get("INFRA_AWS_SUBNETS", "subnet-00000000000000001").split(",") if s]
SECURITY_GROUPS = [s for s in os.environ.get("INFRA_AWS_SECURITY_GROUPS", "").split(",") if s]
PROMETHEUS_PROFILE = os.environ.get("INFRA_AWS_PROMETHEUS_PROFILE") or None
ETCD_AMI = os.environ.get("INFRA_AWS_ETCD_AMI", "infra-etcd-3.4.23")
PROMETHEUS_AMI = os.environ.get("INFRA_AWS_PROMETHEUS_AMI", "infra-prometheus-2.42.0")
# EC2 instances take a minute or two to boot before etcd answers.
HEALTH_TIMEOUT = float(os.environ.get("INFRA_AWS_HEALTH_TIMEOUT", "300"))

stack = Stack(
    name="etcd-aws",
    provider="aws",
    provider_config={
        "region": REGION,
        "subnets": SUBNETS,
        "security_group_ids": SECURITY_GROUPS,
        "instance_type": "t3.small",
        "tags": {"project": "etcd-aws"},
    },
    groups=(
        Group(
            name="etcd",
            size=3,
            role="etcd",
            image=ETCD_AMI,
            machine_type="t3.small",
            config={"version": "3.4.23", "health_timeout": HEALTH_TIMEOUT},
            provider_config={"address_offset": 10},
        ),
        Group(
            name="prometheus",
            size=1,
            role="prometheus",
            image=PROMETHEUS_AMI,
            machine_type="t3.small",
            config={"watch": ["etcd"]},
            # Prometheus's EC2 service discovery reads the instance list with the instance's role.
            provider_config={"iam_instance_profile": PROMETHEUS_PROFILE} if PROMETHEUS_PROFILE else {},
        ),
    ),
)
