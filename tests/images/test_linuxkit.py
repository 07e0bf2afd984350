"""The LinuxKit image document (reconciler.core.linuxkit): LinuxKit's schema, no member data, boot-time values."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.core import linuxkit
from reconciler.core.model import ConfigFile, MemberSpec, Service

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "linuxkit_standin" / "schema.json").read_text())

ETCD = Service(
    name="etcd",
    image="quay.io/coreos/etcd:v3.4.30",
    command=("etcd", "--config-file", "{config}/etcd/etcd.conf.yml", "--data-dir", "{data}/etcd",
             "--listen-client-urls", "https://{address}:2379"),
    env={"ETCD_NAME": "{name}", "GOMAXPROCS": "2"},
    ports=(2379, 2380),
)
PLAIN = Service(name="web", image="nginx:1.27", command=("nginx", "-g", "daemon off;"))


def member(i: int = 0, address: str | None = None) -> MemberSpec:
    return MemberSpec(
        stack="demo", group="etcd", member=f"etcd-{i}", role="etcd", services=(ETCD,), address=address,
        files=(ConfigFile(path="etcd/etcd.conf.yml", content=f"name: etcd-{i}\n"),
               ConfigFile(path="etcd/server.key", content="PRIVATE-KEY-BYTES", mode=0o600, secret=True)),
    )


@pytest.mark.parametrize("source", ["cdrom", "gcp", "aws"])
def test_the_document_is_valid_linuxkit_with_pinned_components(source: str) -> None:
    doc = yaml.safe_load(linuxkit.render([ETCD, PLAIN], metadata=source))
    jsonschema.validate(doc, SCHEMA)
    assert doc["kernel"]["image"] == linuxkit.KERNEL_IMAGE
    assert [i.split(":")[0] for i in doc["init"]] == [
        "linuxkit/init", "linuxkit/runc", "linuxkit/containerd", "linuxkit/ca-certificates",
    ]
    assert all(":" in i for i in doc["init"])  # every component pinned
    onboot = {step["name"]: step for step in doc["onboot"]}
    assert onboot["metadata"]["command"] == ["/usr/bin/metadata", source]
    assert doc["onboot"][-1]["name"] == "metadata"
    web = doc["services"][1]
    assert web["command"] == ["nginx", "-g", "daemon off;"]  # nothing to fill in at boot: as written
    assert "/run/config:/run/config:ro" in web["binds"]


def test_the_schema_refuses_what_linuxkit_refuses() -> None:
    doc = linuxkit.document([PLAIN], metadata="gcp")
    doc["services"][0]["restart"] = "always"  # not a LinuxKit service key
    with pytest.raises(jsonschema.ValidationError, match="restart"):
        jsonschema.validate(doc, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**linuxkit.document([PLAIN], metadata="gcp"), "members": []}, SCHEMA)


def test_the_image_holds_no_member_data_and_no_file_contents() -> None:
    text = linuxkit.render(member(0, "10.128.15.2").services, metadata="gcp")
    for secret_or_member in ("PRIVATE-KEY-BYTES", "name: etcd-0", "etcd-0", "10.128.15.2", "demo"):
        assert secret_or_member not in text
    assert linuxkit.render(member(0).services, metadata="gcp") == linuxkit.render(member(2).services, metadata="gcp")


def test_boot_values_are_read_from_the_members_metadata(tmp_path: Path) -> None:
    """Run the wrapper the image holds, with /run/config laid out as the metadata package would."""
    doc = linuxkit.document([ETCD], metadata="gcp")
    command = doc["services"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    assert "GOMAXPROCS=2" in doc["services"][0]["env"]  # plain env stays in the image
    config = tmp_path / "config"
    (config / "infra").mkdir(parents=True)
    spec = member(1, "10.128.15.3")
    for f in spec.identity_files():
        (config / f.path).write_text(f.content)
    script = command[2].replace(linuxkit.CONFIG_DIR, str(config)).replace("exec etcd", "exec printf '%s\\n' etcd") + \
        'printf "ETCD_NAME=%s\\n" "$ETCD_NAME"\n'
    script = script.replace("exec printf", "printf")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "https://10.128.15.3:2379" in out
    assert f"{config}/etcd/etcd.conf.yml" in out and "/var/lib/infra/etcd" in out
    assert f"ETCD_NAME={spec.name}" in out


def test_without_infra_metadata_a_member_falls_back_to_the_cloud_metadata(tmp_path: Path) -> None:
    doc = linuxkit.document([ETCD], metadata="aws")
    config = tmp_path / "config"
    config.mkdir()
    (config / "local_ipv4").write_text("10.20.0.7")
    (config / "hostname").write_text("ip-10-20-0-7")
    script = doc["services"][0]["command"][2].replace(linuxkit.CONFIG_DIR, str(config)).replace("exec etcd", "printf '%s\\n' etcd")
    out = subprocess.run(["/bin/sh", "-c", script + 'echo "$ETCD_NAME"\n'], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "https://10.20.0.7:2379" in out and out[-1] == "ip-10-20-0-7"


def test_awkward_arguments_survive_the_wrapper(tmp_path: Path) -> None:
    svc = Service(name="x", image="busybox", command=("echo", "it's {address}", "$HOME", "a b", "{address}{name}"))
    script = linuxkit.document([svc], metadata="gcp")["services"][0]["command"][2]
    config = tmp_path / "c"
    (config / "infra").mkdir(parents=True)
    (config / "infra" / "address").write_text("1.2.3.4")
    (config / "infra" / "name").write_text("n")
    script = script.replace(linuxkit.CONFIG_DIR, str(config)).replace("exec echo", "printf '%s\\n'")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["it's 1.2.3.4", "$HOME", "a b", "1.2.3.4n"]


def test_user_data_carries_the_members_identity() -> None:
    spec = member(1, "10.128.15.3")
    infra = spec.userdata()["infra"]["entries"]
    assert infra["address"]["content"] == "10.128.15.3"
    assert infra["name"]["content"] == spec.name
    assert json.loads(infra["member.json"]["content"])["member"] == "etcd-1"
    assert "address" not in member(1).userdata()["infra"]["entries"]  # not reserved: found at boot
    assert spec.spec_hash == member(1).spec_hash  # identity and address are runtime, out of the hash


def test_unknown_metadata_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LinuxKit metadata provider 'azure'"):
        linuxkit.render([PLAIN], metadata="azure")


def test_an_emulator_reads_the_document_back_as_the_host_commands_it_was_made_from() -> None:
    plain = Service(name="web", image="nginx:1.27", command=("nginx", "-c", "{config}/web/nginx.conf"),
                    env={"ROOT": "{data}/www"})
    (back,) = linuxkit.host_services(linuxkit.document([plain], metadata="gcp"))
    assert back.command == plain.command and back.env == plain.env and back.image == plain.image
    (etcd,) = linuxkit.host_services(linuxkit.document([ETCD], metadata="gcp"))
    assert "{config}/infra/address" in etcd.command[2] and "/run/config" not in etcd.command[2]
    files = linuxkit.userdata_files(member(1, "10.128.15.3").userdata())
    by_path = {f.path: f for f in files}
    assert by_path["infra/address"].content == "10.128.15.3" and by_path["etcd/server.key"].secret
    assert not by_path["etcd/etcd.conf.yml"].secret
    with pytest.raises(linuxkit.DocumentError, match="not an object"):
        linuxkit.userdata_files({"etcd": "oops"})
