"""The fakecloud plugin and the ``hcloud`` preset against pulumi-hcloud's names.

``hcloud_contract.json`` holds the names pulumi-hcloud's schema gives the Server resource and the
getServers function (taken from the @pulumi/hcloud 1.41.0 npm package's type declarations). The
stand-in must use only those names (plus its one extra secret output), and the preset must ask
for and read exactly those: when either drifts from the real provider, this test says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from providers.pulumi import PulumiProvider
from providers.pulumi.config import PRESETS, parse_config
from reconciler.core.model import MemberSpec, stack_selector
from tests.pulumi import fakecloud as plugin
from tests.pulumi.conftest import FakeCloud

CONTRACT = json.loads((Path(__file__).parent / "hcloud_contract.json").read_text())


def test_the_hcloud_preset_speaks_pulumi_hclouds_names() -> None:
    preset = parse_config({"preset": "hcloud"})
    assert preset.plugin == CONTRACT["plugin"] and preset.resource == CONTRACT["resource"]
    assert set(preset.inputs) <= set(CONTRACT["server_inputs"])
    assert preset.list.function == CONTRACT["list_function"] and set(preset.list.args) <= set(CONTRACT["list_args"])
    assert preset.list.items in CONTRACT["list_result"]
    fields = preset.list.fields
    assert {fields.id, fields.name, fields.labels, fields.address, fields.status} <= set(CONTRACT["list_item"])
    assert set(preset.status) == set(CONTRACT["statuses"])
    assert set(PRESETS["hcloud"]["status"].values()) <= {"running", "pending", "stopping", "stopped", "unknown"}


def test_the_stand_in_uses_only_pulumi_hclouds_names(fakecloud: FakeCloud, tmp_path: Path) -> None:
    assert set(plugin.LIST_ITEM) <= set(CONTRACT["list_item"])
    p = PulumiProvider.open({"preset": "hcloud", "config": {"token": {"env": "FAKECLOUD_API_TOKEN"}}},
                            stack="hc", state_dir=tmp_path)  # the stand-in, found as pulumi-resource-hcloud
    try:
        spec = MemberSpec(stack="hc", group="web", member="web-0", role="command", machine_type="cx22",
                          image="debian-12")
        p.create(spec)
        (server,) = fakecloud.servers().values()
        assert set(server) - {"id", "rootPassword"} <= set(CONTRACT["server_outputs"])
        assert [i.name for i in p.list(stack_selector("hc"))] == [spec.name]
        assert p.binary.name == "pulumi-resource-hcloud"
    finally:
        p.close()
