"""The LinuxKit YAML rendered for a member (reconciler.linuxkit), as the local provider writes it."""

from __future__ import annotations

import pytest
import yaml

from reconciler import linuxkit
from reconciler.model import ConfigFile, MemberSpec, Service


def spec() -> MemberSpec:
    etcd = Service(
        name="etcd",
        image="quay.io/coreos/etcd:v3.4.30",
        command=("etcd", "--config-file", "{config}/etcd/etcd.conf.yml", "--data-dir", "{data}/etcd",
                 "--listen-client-urls", "https://{address}:2379"),
        env={"ETCD_NAME": "{name}"},
        ports=(2379, 2380),
    )
    return MemberSpec(
        stack="demo",
        group="etcd",
        member="etcd-0",
        role="etcd",
        services=(etcd,),
        files=(
            ConfigFile(path="etcd/etcd.conf.yml", content="name: etcd-0\n"),
            ConfigFile(path="etcd/server.key", content="PRIVATE-KEY-BYTES", mode=0o600, secret=True),
        ),
    )


@pytest.mark.parametrize("source", ["cdrom", "gcp", "aws"])
def test_render_has_kernel_init_metadata_and_services(source: str) -> None:
    member = spec()
    doc = yaml.safe_load(linuxkit.render(member, metadata=source, address="127.77.0.9"))
    assert doc["kernel"]["image"] == linuxkit.KERNEL_IMAGE
    assert [i.split(":")[0] for i in doc["init"]] == [
        "linuxkit/init", "linuxkit/runc", "linuxkit/containerd", "linuxkit/ca-certificates",
    ]
    assert all(":" in i for i in doc["init"])  # every component pinned
    onboot = {step["name"]: step for step in doc["onboot"]}
    assert onboot["metadata"]["image"].startswith("linuxkit/metadata:")
    assert onboot["metadata"]["command"] == ["/usr/bin/metadata", source]
    assert doc["onboot"][-1]["name"] == "metadata"
    (svc,) = doc["services"]
    assert svc["name"] == "etcd" and svc["image"] == "quay.io/coreos/etcd:v3.4.30"
    assert svc["command"] == [
        "etcd", "--config-file", "/run/config/etcd/etcd.conf.yml", "--data-dir", "/var/lib/infra/etcd",
        "--listen-client-urls", "https://127.77.0.9:2379",
    ]
    assert svc["env"] == [f"ETCD_NAME={member.name}"]
    assert "/run/config:/run/config:ro" in svc["binds"]


def test_render_never_contains_file_contents() -> None:
    text = linuxkit.render(spec(), metadata="gcp")
    assert "PRIVATE-KEY-BYTES" not in text
    assert "name: etcd-0" not in text  # configuration travels as user-data, not in the image
    assert "{address}" in text  # unknown at build time: left for the instance to fill in


def test_unknown_metadata_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LinuxKit metadata provider 'azure'"):
        linuxkit.render(spec(), metadata="azure")
