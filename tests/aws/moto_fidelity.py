"""Where moto differs from EC2 in ways the image pipeline depends on, made right in the test world.

The product never compensates for moto; these patches make moto behave as EC2 documents, and
are applied by the aws tests (in-process, :func:`apply` with ``monkeypatch.setattr``) and by the
moto server they start (``python -m tests.aws.moto_server``):

* ``RegisterImage`` drops ``TagSpecifications`` (moto 5.x registers the AMI untagged): EC2 tags
  the AMI in the same call. Patched: the tags of the ``image`` specification are set on it.
* An EBS-direct snapshot is ``completed`` in ``DescribeSnapshots`` from its ``StartSnapshot`` on
  (moto creates it as a finished EC2 snapshot): EC2 reports it ``pending`` until
  ``CompleteSnapshot``. Patched: pending until completed.

Left as moto has it (nothing here depends on it): ``RegisterImage`` ignores
``BlockDeviceMappings`` and gives the AMI a mapping of its own, so tests find an image's snapshot
by its ``infra-image`` tag, not through the AMI.

``tests/aws/test_images.py`` checks both patched differences still exist in the installed moto (so a
moto that fixes one is noticed and the patch removed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Setattr = Callable[[Any, str, Any], None]


def apply(setattr_: Setattr) -> None:
    from moto.ebs.models import EBSBackend
    from moto.ec2.responses.amis import AmisResponse

    original_register = AmisResponse.register_image
    original_start = EBSBackend.start_snapshot
    original_complete = EBSBackend.complete_snapshot

    def register_image(self: Any) -> Any:
        result = original_register(self)
        tags = self._parse_tag_specification().get("image", {})
        if tags:
            self.ec2_backend.create_tags([result.result["ImageId"]], tags)  # type: ignore[index]
        return result

    def start_snapshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        snap = original_start(self, *args, **kwargs)
        self.ec2_backend.snapshots[snap.snapshot_id].status = "pending"
        return snap

    def complete_snapshot(self: Any, snapshot_id: str) -> Any:
        result = original_complete(self, snapshot_id)
        self.ec2_backend.snapshots[snapshot_id].status = "completed"
        return result

    setattr_(AmisResponse, "register_image", register_image)
    setattr_(EBSBackend, "start_snapshot", start_snapshot)
    setattr_(EBSBackend, "complete_snapshot", complete_snapshot)
