"""A moto EC2 world for the ``aws`` provider's tests and ``bench/aws_observe.py``.

* :data:`FAKE_ENV` — fake credentials and region, no profile or endpoint leaking in from the
  machine running the tests, and moto without its ~1000 default AMIs (faster, and an image must
  be registered to exist);
* :func:`build` — a VPC with two subnets in two zones, a security group and a registered AMI;
* hooks on a client's botocore events: :class:`CallCounter` (``before-call``),
  :class:`Faults` (``before-send``: throttling and 503 answers), :func:`lose_response`
  (``after-call``: the call succeeded, its answer never arrives), :class:`TokenMemory` (EC2's
  ClientToken idempotency, which moto ignores) and :class:`HideNameLookups` (EC2's eventual
  consistency: a fresh instance not yet visible to DescribeInstances);
* :func:`index_moto_tags` — moto looks up a resource's tags by scanning every tag of the
  account, so listing N instances costs O(N²); this gives it a per-resource index with identical
  results (checked by ``tests/aws/test_moto_world.py``), which makes 2000 instances affordable;
* :func:`populate` — put instances tagged exactly as ``AwsProvider.create`` tags them straight
  into moto's backend (fast, for the 2000-instance observation test and bench).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectionClosedError

from reconciler.core.model import MemberSpec

REGION = "us-east-1"
AMI_NAME = "infra-test-linuxkit"
INSTANCE_TYPE = "t3.micro"

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}
#: Variables removed so that nothing of the machine's own AWS setup reaches a test.
CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
           "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@dataclass
class World:
    """What :func:`build` created in moto."""

    vpc: str
    subnets: list[str]
    cidrs: list[str]
    security_group: str
    ami_id: str
    ami_name: str = AMI_NAME

    def provider_config(self, **extra: Any) -> dict[str, Any]:
        return {"region": REGION, "subnets": list(self.subnets), "security_group_ids": [self.security_group],
                **extra}


def fake_env(setenv: Callable[[str, str], None], delenv: Callable[[str], None]) -> None:
    """Apply :data:`FAKE_ENV` and remove :data:`CLEARED` (``monkeypatch.setenv``/``delenv``)."""
    for key, value in FAKE_ENV.items():
        setenv(key, value)
    for key in CLEARED:
        delenv(key)


def strict_moto(setattr_: Callable[[Any, str, Any], None]) -> None:
    """Make in-process moto refuse unknown AMIs and instance types at launch, as EC2 does."""
    from moto import settings

    setattr_(settings, "ENABLE_AMI_VALIDATION", True)
    setattr_(settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)


def client() -> Any:
    """A raw EC2 client (the tests' view from outside infra), sharing the provider's loader."""
    from providers.aws.session import new_session

    return new_session().client("ec2", region_name=REGION)


def build(client: Any) -> World:
    """A VPC with two subnets (two zones), a security group and an AMI named :data:`AMI_NAME`."""
    vpc = client.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    cidrs = ["10.20.0.0/20", "10.20.16.0/20"]
    subnets = [
        client.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for cidr, zone in zip(cidrs, "ab", strict=True)
    ]
    sg = client.create_security_group(GroupName="infra-test", Description="infra tests", VpcId=vpc)["GroupId"]
    ami = client.register_image(Name=AMI_NAME, Description="LinuxKit test image")["ImageId"]
    return World(vpc=vpc, subnets=subnets, cidrs=cidrs, security_group=sg, ami_id=ami)


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def all_instances(client: Any, *states: str) -> list[dict[str, Any]]:
    """Every instance moto holds (optionally only in ``states``), unfiltered by tags."""
    filters = [{"Name": "instance-state-name", "Values": list(states)}] if states else []
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_instances").paginate(Filters=filters):
        for res in page["Reservations"]:
            out.extend(res["Instances"])
    return out


# -- hooks ---------------------------------------------------------------------------------------


class CallCounter:
    """Counts the EC2 operations a client sends (a ``before-call`` hook)."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.ec2", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.counts[model.name] += 1

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def error_response(url: str, status: int, code: str, message: str) -> AWSResponse:
    """An EC2 (query protocol) error answer, as the real service sends it."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    ).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "text/xml"
    return AWSResponse(url, status, headers, _Body(body))


#: The injected failures: EC2 throttling (it answers 503) and plain server errors.
FAULTS = (
    (503, "RequestLimitExceeded", "Request limit exceeded."),
    (503, "Unavailable", "The service is unavailable. Please try again shortly."),
    (500, "InternalError", "An internal error has occurred."),
)


class Faults:
    """A ``before-send`` hook answering ``rate`` of the calls with throttling or a 5xx.

    Registered first, so it answers before moto's own stubber; the request never reaches moto.
    """

    def __init__(self, client: Any, rate: float, seed: int = 7) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.enabled = True
        self._lock = threading.Lock()
        client.meta.events.register_first("before-send.ec2", self)

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        with self._lock:
            if not self.enabled or self.rng.random() >= self.rate:
                return None
            status, code, message = self.rng.choice(FAULTS)
            self.injected[code] += 1
        return error_response(request.url, status, code, message)


def lose_response(client: Any, operation: str, times: int = 1) -> list[str]:
    """The first ``times`` ``operation`` calls succeed in moto but their answers are lost.

    Returns the list the lost calls' request ids are appended to (to count them).
    """
    lost: list[str] = []

    def after_call(parsed: dict[str, Any], **_: Any) -> None:
        if len(lost) < times:
            lost.append(parsed.get("ResponseMetadata", {}).get("RequestId", "?"))
            raise ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    client.meta.events.register(f"after-call.ec2.{operation}", after_call)
    return lost


class _Http:
    status_code = 200
    headers: dict[str, str] = {}


class TokenMemory:
    """EC2's ClientToken idempotency, which moto ignores, emulated with botocore hooks.

    A RunInstances with a token seen before is answered with the instance that token launched,
    *as it is now* (EC2 does the same, including for a terminated instance, for at least a day).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.launched: dict[str, str] = {}  # token → instance id
        self.replayed: list[str] = []
        self.tokens: list[str] = []
        client.meta.events.register("before-parameter-build.ec2.RunInstances", self._params)
        client.meta.events.register("before-call.ec2.RunInstances", self._before)
        client.meta.events.register("after-call.ec2.RunInstances", self._after)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["client_token"] = params.get("ClientToken", "")
        self.tokens.append(context["client_token"])

    def _before(self, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        token = context.get("client_token", "")
        instance_id = self.launched.get(token)
        if instance_id is None:
            return None
        self.replayed.append(token)
        context["replayed"] = True
        resp = self.client.describe_instances(InstanceIds=[instance_id])
        instances = [i for r in resp["Reservations"] for i in r["Instances"]]
        return _Http(), {"Instances": instances, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        token = context.get("client_token", "")
        if token and not context.get("replayed") and parsed.get("Instances"):
            self.launched[token] = parsed["Instances"][0]["InstanceId"]


class HideNameLookups:
    """EC2's eventual consistency: DescribeInstances filtered by ``tag:Name`` sees nothing."""

    def __init__(self, client: Any) -> None:
        self.hidden = 0
        client.meta.events.register("before-parameter-build.ec2.DescribeInstances", self._params)
        client.meta.events.register("before-call.ec2.DescribeInstances", self._before)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["by_name"] = any(f.get("Name") == "tag:Name" for f in params.get("Filters", []))

    def _before(self, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if context.get("by_name"):
            self.hidden += 1
            return _Http(), {"Reservations": [], "ResponseMetadata": {"HTTPStatusCode": 200}}
        return None


# -- moto speed-ups ------------------------------------------------------------------------------

def index_moto_tags(setattr_: Callable[[Any, str, Any], None]) -> None:
    """Give moto's tag lookup a per-resource index (same results, O(1) instead of O(all tags))."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        rid = getattr(self, "id", None)
        if not rid:
            return []
        tags = self.ec2_backend.tags.get(rid) or {}
        rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": rtype} for k, v in tags.items()]

    setattr_(TaggedEC2Resource, "get_tags", get_tags)


def populate(world: World, specs: Sequence[MemberSpec], *, tag: Callable[[MemberSpec], dict[str, str]]) -> list[str]:
    """Instances for ``specs`` straight in moto's backend, one reservation each (as ``create``
    makes them), tagged with ``tag(spec)``. Returns their ids.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import Reservation  # type: ignore[attr-defined]
    from moto.ec2.utils import random_reservation_id

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
    batch = backend.run_instances(
        world.ami_id, len(specs), None, [], instance_type=INSTANCE_TYPE, is_instance_type_default=True,
        region_name=REGION, subnet_id=world.subnets[0],
    )
    del backend.reservations[batch.id]
    ids = []
    for spec, inst in zip(specs, batch.instances, strict=True):
        reservation = Reservation(reservation_id=random_reservation_id(), owner_id=backend.account_id)
        reservation.instances.append(inst)
        backend.reservations[reservation.id] = reservation
        backend.create_tags([inst.id], tag(spec))
        ids.append(inst.id)
    return ids
