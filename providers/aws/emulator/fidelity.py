"""Where moto differs from EC2 in ways infra depends on, fixed for the EC2 emulator.

Applied by :mod:`providers.aws.emulator.main` before its moto server starts (and by the tests'
moto server, ``tests/aws/moto_server.py``). Each difference, and what EC2 does instead:

* ``RegisterImage`` drops ``TagSpecifications``: EC2 tags the AMI in the same call. Fixed.
* ``RegisterImage`` drops ``ImdsSupport``: EC2 keeps it (``v2.0``: instances of the AMI answer
  IMDSv2 only) and describes it. Fixed (recorded and described; nothing enforces it here).
* ``RegisterImage`` accepts a second AMI of a name the account already has: EC2 answers
  ``InvalidAMIName.Duplicate``. Fixed.
* An EBS-direct snapshot is ``completed`` from its ``StartSnapshot`` on: EC2 reports it
  ``pending`` until ``CompleteSnapshot``. Fixed.
* A fixed ``PrivateIpAddress`` that is taken fails with a plain server error (500): EC2 answers
  ``InvalidIPAddress.InUse`` (400). Fixed.
* A terminated instance keeps its private IP for ever: EC2 releases it, so a replacement can take
  the same fixed address. Fixed: the address of a terminated (or shutting-down) instance is
  released when it is asked for again.

* With signatures checked (the emulator's IAM), moto verifies a request that has no body against
  its parsed parameters encoded as a form, so the signature of a body-less ``CompleteSnapshot``
  never matches: AWS hashes the empty body. Fixed: an EBS request's body is what is hashed.

Checked and left as moto has it because it matches EC2: an instance launched with a fixed
``PrivateIpAddress`` gets exactly that address (the etcd members' fixed addresses; the EC2
emulator's heal test replaces a member at its address).

Left as moto has it, and read around where it matters: ``ListSnapshotBlocks`` answers
``BlockSize: 512`` where EBS says 524288 (bytes); the emulator's VM mode reads blocks at EBS's
512 KiB.

Left as moto has it (nothing in infra depends on it): ``RegisterImage`` ignores
``BlockDeviceMappings`` and gives the AMI a mapping of its own (find an image's snapshot by its
``infra-image`` tag), and ``ClientToken`` is ignored by ``StartSnapshot``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Setattr = Callable[[Any, str, Any], None]


def apply(setattr_: Setattr) -> None:
    """Patch moto's classes (``setattr_`` is ``setattr``, or a test's ``monkeypatch.setattr``)."""
    from moto.ebs.models import EBSBackend
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.subnets import Subnet
    from moto.ec2.responses.amis import AmisResponse
    from moto.iam.access_control import IAMRequestBase

    original_register = AmisResponse.register_image
    original_start = EBSBackend.start_snapshot
    original_complete = EBSBackend.complete_snapshot
    original_request_ip = Subnet.request_ip
    original_aws_request = IAMRequestBase._create_aws_request

    def register_image(self: Any) -> Any:
        name = self._get_param("Name")
        if name and any(ami.name == name for ami in self.ec2_backend.amis.values()):
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI "
                                 f"{next(a.id for a in self.ec2_backend.amis.values() if a.name == name)}")
        result = original_register(self)
        image_id = result.result["ImageId"]  # type: ignore[index]
        tags = self._parse_tag_specification().get("image", {})
        if tags:
            self.ec2_backend.create_tags([image_id], tags)
        imds = self._get_param("ImdsSupport")
        if imds:
            ami = self.ec2_backend.amis[image_id]
            ami.imds = ami.imds_support = imds
        return result

    def start_snapshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        snap = original_start(self, *args, **kwargs)
        self.ec2_backend.snapshots[snap.snapshot_id].status = "pending"
        return snap

    def complete_snapshot(self: Any, snapshot_id: str) -> Any:
        result = original_complete(self, snapshot_id)
        self.ec2_backend.snapshots[snapshot_id].status = "completed"
        return result

    def request_ip(self: Any, ip: str, instance: Any) -> None:
        holder = self._subnet_ips.get(ip)
        if holder is not None and getattr(getattr(holder, "_state", None), "name", "") in ("terminated",
                                                                                              "shutting-down"):
            del self._subnet_ips[ip]  # EC2 released it when the instance was terminated
        elif holder is not None:
            raise EC2ClientError("InvalidIPAddress.InUse", f"Address {ip} is in use.")
        original_request_ip(self, ip, instance)

    def create_aws_request(self: Any) -> Any:
        request = original_aws_request(self)
        if self._service == "ebs" and not self._body:
            request.data = b""  # what the client hashed (moto would hash its parameters as a form)
        return request

    setattr_(AmisResponse, "register_image", register_image)
    setattr_(IAMRequestBase, "_create_aws_request", create_aws_request)
    setattr_(EBSBackend, "start_snapshot", start_snapshot)
    setattr_(EBSBackend, "complete_snapshot", complete_snapshot)
    setattr_(Subnet, "request_ip", request_ip)
