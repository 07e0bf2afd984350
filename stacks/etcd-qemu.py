"""etcd-qemu: the cloud stacks' 3-member etcd cluster and Prometheus, as QEMU VMs on this machine.

Every member is a virtual machine (the ``qemu`` provider, software emulation: no KVM needed)
booting the disk infra builds from Debian packages (``image_builder="debian"``), on a bridge with
the subnet 10.77.0.0/24 that exists only in a private network namespace; each VM gets its address
by DHCP and its user-data from a GCE-shaped metadata server at 169.254.169.254, and Prometheus (in
its VM) finds the members through HTTP discovery on the gateway. As root:

    unshare -n bash                                   # a private network namespace
    ip link set lo up; export INFRA_NETWORK_ALLOW=127.0.0.0/8,10.77.0.0/24
    infra apply stacks/etcd-qemu.py --yes             # builds the images, boots 4 VMs
    eval "$(infra env stacks/etcd-qemu.py)"; etcdctl endpoint health --cluster
    infra status stacks/etcd-qemu.py
    infra destroy stacks/etcd-qemu.py --yes --images  # the last VM stops the bridge and its servers

The VMs outlive the command that booted them, not the namespace: run every command of this stack
in the same one. Needs ``scripts/install.sh --vm`` (QEMU, dnsmasq, the Debian builder's tools).
"""

from plugins.etcd import Etcd
from plugins.prometheus import Prometheus
from reconciler import Stack

etcd = Etcd(name="etcd", size=3, version="3.4.23")

stack = Stack(
    name="etcd-qemu",
    provider="qemu",
    image_builder="debian",
    groups=(etcd, Prometheus(name="prometheus", size=1, watch=[etcd])),
)
