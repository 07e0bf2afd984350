"""etcd-local: a 3-member etcd cluster (mutual TLS) watched by one Prometheus, as real local processes.

Each member runs on its own loopback address (127.77.x.y) on etcd's standard ports, client 2379
and peer 2380; Prometheus listens on 9090 of its own address and finds the members by discovery.

    infra apply stacks/etcd-local.py --yes
    eval "$(infra env stacks/etcd-local.py)"      # ETCDCTL_ENDPOINTS, _CACERT, _CERT, _KEY
    etcdctl member list -w table; etcdctl endpoint health --cluster
    infra status stacks/etcd-local.py

Edit ``size`` (odd: 1, 3, 5, 7) and apply again to grow or shrink the cluster one member at a time.
"""

from reconciler import Group, Stack

stack = Stack(
    name="etcd-local",
    provider="local",
    groups=(
        Group(
            name="etcd",
            size=3,
            role="etcd",
            config={
                "version": "3.4.23",
                # Loopback round trips are microseconds: a short heartbeat and election timeout
                # make bootstrap and leader failover quick.
                "heartbeat_interval_ms": 50,
                "election_timeout_ms": 500,
                "flags": {"snapshot-count": 10000},
            },
        ),
        Group(
            name="prometheus",
            size=1,
            role="prometheus",
            config={"watch": ["etcd"]},
        ),
    ),
)
