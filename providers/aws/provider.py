"""The ``aws`` provider: instances are EC2 instances, reached through boto3.

Built by the CLI through the ``infra.providers`` entry point (``AwsProvider.open``); called by the
engine for one stack. How the protocol maps onto EC2:

* ownership labels are EC2 tags, set in the ``RunInstances`` request itself
  (``TagSpecifications`` for the instance and its volumes, so they exist atomically with it);
  the ``Name`` tag is the deterministic instance name;
* observation (``list``) is one paginated ``DescribeInstances`` filtered by the selector's tags and
  by the live states (pending, running, stopping, stopped) with ``MaxResults=1000``: at most
  ceil(N/1000)+1 calls for N instances, never one call per instance;
* ``create`` first looks the name up (one ``DescribeInstances`` filtered by ``tag:Name`` and
  ``tag:infra-stack``: a per-*change* read, never made while observing) and returns the instance
  it finds. Otherwise it launches with a ``ClientToken`` derived from the name, so a launch
  retried after a lost response gets the same instance back from EC2 even before
  ``DescribeInstances`` shows it. EC2 remembers a token for at least a day after the instance is
  terminated and would then answer with the *terminated* instance; create notices that and
  launches again with a token derived from the name and that dead instance's id (still
  deterministic, so a retry of *that* launch is idempotent too);
* the member's files travel as user-data, the JSON LinuxKit's ``metadata`` package reads on EC2
  (at most 16 KB: EC2's limit);
* the image is an AMI id (``ami-...``) or a name looked up among ``image_owners``;
* members are spread over ``subnets`` round-robin by ``MemberSpec.placement``; with
  ``address_offset`` each member gets a fixed private address known in advance
  (:meth:`AwsProvider.address_for`), which etcd's static bootstrap needs.

Retries: botocore's own retries are switched off (``total_max_attempts=1``), so each retry is
visible and happens in exactly one place. Calls made while *applying* (create, delete) are
retried by the executor, which already retries every TransientError with exponential backoff,
full jitter and a per-change deadline (tenacity); retrying inside botocore as well would
multiply the attempts (3 x 8) and stretch a failing change past that deadline. Reads made while
*planning* (``list``, ``validate``, ``address_for``) have no executor around them, so this
module retries them itself, page by page, with the same kind of backoff (:data:`READ_RETRY`);
a listing is never returned partially.

Every EC2 error goes through :mod:`providers.aws.errors`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from providers.aws import errors
from providers.aws import images as aws_images
from providers.aws.config import AMI_ID_RE, SD_KEY_ENV, SD_SECRET_ENV, AwsConfig, endpoint_url, parse_config
from providers.aws.session import BOTO_CONFIG, Ec2Session, new_session
from reconciler.core.errors import ConfigError, NotFoundError, PermanentError, TransientError
from reconciler.core.image import LABEL_IMAGE, ImageRecord, ImageSpec, pinned
from reconciler.core.model import LABEL_STACK, Instance, InstanceStatus, MemberSpec, Problem
from reconciler.kit.ownership import merged_labels, require_label_update, require_owned
from reconciler.kit.provider import Progress, SdConfig

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef, TagTypeDef

T = TypeVar("T")

#: DescribeInstances page size (EC2's maximum).
PAGE_SIZE = 1000
#: EC2 accepts at most 16 KB of user-data (before base64).
USER_DATA_MAX = 16 * 1024
#: The states ``list`` reports; shutting-down and terminated instances are gone for infra.
LIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = frozenset({"shutting-down", "terminated"})
#: How many burned client tokens (answered with a terminated instance) create steps over.
MAX_TOKEN_STEPS = 5



_STATUS: Mapping[str, InstanceStatus] = {
    "pending": InstanceStatus.PENDING,
    "running": InstanceStatus.RUNNING,
    "stopping": InstanceStatus.STOPPING,
    "stopped": InstanceStatus.STOPPED,
    "shutting-down": InstanceStatus.DEAD,
    "terminated": InstanceStatus.DEAD,
}

def client_token(name: str, after: str | None = None) -> str:
    """The ``ClientToken`` of a launch of ``name``: 64 ASCII characters, the same in every process.

    ``after`` is the id of a terminated instance EC2 answered the previous token with: the next
    incarnation of the name gets a token of its own.
    """
    raw = name if after is None else f"{name}#after:{after}"
    return "infra-" + hashlib.sha256(raw.encode()).hexdigest()[:58]


def tag_filters(selector: Mapping[str, str]) -> list[FilterTypeDef]:
    """DescribeInstances filters selecting instances tagged with all of ``selector``."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(selector.items())]


class AwsProvider:
    """Instances are EC2 instances of one region. See the module docstring."""

    name: ClassVar[str] = "aws"
    #: LinuxKit images it boots (:mod:`providers.aws.images`): ``linuxkit build --format aws``
    #: (a raw disk), user-data read by the metadata package from EC2's instance metadata.
    image_format: ClassVar[str] = "aws"
    image_metadata: ClassVar[str] = "aws"

    def __init__(
        self, config: AwsConfig, raw: Mapping[str, Any], *, stack: str, region: str, client: EC2Client
    ) -> None:
        self.config = config
        self.stack = stack
        self.region = region
        #: The EC2 and EBS clients both halves of the provider use (:mod:`providers.aws.session`).
        self.api = Ec2Session(client, region)
        #: The one EC2 client; every call goes through it (tests register botocore hooks on it).
        self.client = client
        self._raw = dict(raw)
        self._lock = threading.Lock()
        self._member_configs: dict[str, AwsConfig] = {}
        self._images: dict[tuple[str, tuple[str, ...], str | None], str] = {}
        self._subnet_cidrs: dict[str, str] = {}
        self._verified: set[tuple[str, str]] = set()  # (kind, id) that validate found to exist
        self._emulator: bool | None = None  # whether the endpoint override is infra's EC2 emulator

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> AwsProvider:
        """Validate ``config`` and build the EC2 client. Makes no EC2 call (finding credentials
        may ask the profile's SSO or the instance metadata service).

        Raises ConfigError naming ``provider_config.<field>`` for bad settings or when no region
        is set anywhere, and PermanentError when boto3's default chain finds no credentials.
        """
        cfg = parse_config(config)
        session = new_session()
        region = cfg.resolved_region() or session.region_name
        if not region:
            raise ConfigError(
                "provider_config.region: no AWS region is set",
                hint="set provider_config.region in the stack, or AWS_REGION in the environment",
            )
        with errors.translate("find credentials"):
            credentials = session.get_credentials()
        if credentials is None:
            raise PermanentError(
                "aws: no AWS credentials were found",
                hint="configure boto3's default chain: AWS_PROFILE (with ~/.aws/config), "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, SSO, or an instance role",
            )
        with errors.translate("create the EC2 client"):
            client = session.client("ec2", region_name=region, endpoint_url=endpoint_url(), config=BOTO_CONFIG)
        provider = cls(cfg, config, stack=stack, region=region, client=client)
        provider.api = Ec2Session(client, region, session)
        return provider

    def close(self) -> None:
        self.api.close()

    def ebs_client(self) -> Any:
        """The EBS direct APIs client (made on first use: only an image push needs it)."""
        return self.api.ebs()

    # -- images (reconciler.kit.provider.ImageStore) ---------------------------------------------------

    def find_image(self, image: ImageSpec) -> ImageRecord | None:
        """The AMI tagged ``infra-image=<digest>`` (one DescribeImages), or None."""
        return aws_images.find(self.api, image)

    def push_image(self, image: ImageSpec, artefact: Path, progress: Progress) -> ImageRecord:
        """EBS direct snapshot + RegisterImage, idempotent by digest (see images.py)."""
        required = self.config.metadata_tokens == "required"
        return aws_images.push(self.api, image, artefact, progress, imds_v2=required)

    def delete_image(self, record: ImageRecord) -> None:
        """Deregister the AMI and delete its snapshots; already gone is success."""
        aws_images.delete(self.api, record)

    # -- settings ----------------------------------------------------------------------------------

    def member_config(self, spec: MemberSpec) -> AwsConfig:
        """The member's settings: the group's laid over the stack's (ConfigError names the field)."""
        if not spec.provider_config:
            return self.config
        key = json.dumps(dict(spec.provider_config), sort_keys=True, default=str)
        with self._lock:
            cached = self._member_configs.get(key)
        if cached is None:
            cached = parse_config(spec.provider_config, where=f"groups.{spec.group}.provider_config")
            with self._lock:
                self._member_configs[key] = cached
        return cached

    def _where(self, spec: MemberSpec, field: str) -> str:
        """The stack-file path of setting ``field`` as the member got it (stack or group level)."""
        mine = spec.provider_config.get(field)
        if field in spec.provider_config and mine != self._raw.get(field):
            return f"groups.{spec.group}.provider_config.{field}"
        return f"provider_config.{field}"

    # -- observation -------------------------------------------------------------------------------

    def _to_instance(self, raw: InstanceTypeDef) -> Instance:
        tags = {t.get("Key", ""): t.get("Value", "") for t in raw.get("Tags", [])}
        labels = {k: v for k, v in tags.items() if k != "Name" and not k.startswith("aws:")}
        state = raw.get("State", {}).get("Name", "")
        if self.config.address == "public":
            address = raw.get("PublicIpAddress") or raw.get("PrivateIpAddress")
        else:
            address = raw.get("PrivateIpAddress") or raw.get("PublicIpAddress")
        reason = raw.get("StateReason", {}).get("Message") or raw.get("StateTransitionReason") or None
        launched = raw.get("LaunchTime")
        return Instance(
            id=raw.get("InstanceId", ""),
            name=tags.get("Name") or raw.get("InstanceId", ""),
            labels=labels,
            address=address or None,
            status=_STATUS.get(state, InstanceStatus.UNKNOWN),
            detail=reason if state not in ("pending", "running") else None,
            created_at=launched.timestamp() if launched is not None else None,
        )

    def list(self, selector: Mapping[str, str]) -> builtins.list[Instance]:
        """Every live instance tagged with all of ``selector``: one paginated DescribeInstances.

        Pages of 1000 (EC2's maximum), so N instances take ceil(N/1000) calls (+1 when EC2 ends
        on an empty page). A throttled or failed page is retried (:meth:`_planning_read`); when
        it keeps failing, TransientError is raised and nothing is returned (never a partial
        listing: the planner would take what it missed for missing).
        """
        wanted = selector.items()
        filters: builtins.list[FilterTypeDef] = [
            *tag_filters(selector),
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        what = ", ".join(f"{k}={v}" for k, v in sorted(selector.items())) or "all"
        out: builtins.list[Instance] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": PAGE_SIZE}
            if token:
                kwargs["NextToken"] = token
            page = self._planning_read(f"list instances ({what})", partial(self.client.describe_instances, **kwargs))
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    inst = self._to_instance(raw)
                    if wanted <= dict(inst.labels).items():
                        out.append(inst)
            token = page.get("NextToken")
            if not token:
                return out

    def _planning_read(self, action: str, call: Callable[[], T]) -> T:
        """A read made while planning, retried (:meth:`Ec2Session.planning_read`)."""
        return self.api.planning_read(action, call)

    def _find_by_name(self, spec: MemberSpec) -> Instance | None:
        """The live instance named ``spec.name`` in the stack, if any (oldest first)."""
        filters: builtins.list[FilterTypeDef] = [
            *tag_filters({"Name": spec.name, LABEL_STACK: spec.stack}),
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        with errors.translate(f"look up {spec.name}"):
            resp = self.client.describe_instances(Filters=filters)
        found = [raw for res in resp.get("Reservations", []) for raw in res.get("Instances", [])]
        found.sort(key=lambda raw: (str(raw.get("LaunchTime", "")), raw.get("InstanceId", "")))
        for raw in found:
            inst = self._to_instance(raw)
            if inst.name == spec.name and inst.owned_by(spec.stack):
                return inst
        return None

    # -- images, subnets, addresses ----------------------------------------------------------------

    def _image_ref(self, spec: MemberSpec, cfg: AwsConfig) -> str:
        ref = spec.image or cfg.image
        if not ref:
            raise PermanentError(
                f"aws: group {spec.group!r} has no image",
                hint="set the group's image (or provider_config.image) to an AMI id or name",
            )
        return ref

    def resolve_image(self, ref: str, owners: Sequence[str], digest: str | None = None) -> str:
        """The AMI id of ``ref`` (an id is taken as is; a name is looked up, once per provider).

        Several AMIs of that name are told apart by ``digest`` (an image infra built: the AMIs
        tagged ``infra-image=<digest>`` hold the same disk, and the oldest is taken; a plain moto
        server registers a second AMI of a name where EC2 refuses). Raises ResourceMissing when
        no AMI of that name is owned by ``owners``, PermanentError when several are and the
        digest does not single out infra's own (pin the id).
        """
        if AMI_ID_RE.match(ref):
            return ref
        key = (ref, tuple(owners), digest)
        with self._lock:
            cached = self._images.get(key)
        if cached is not None:
            return cached
        images = self._planning_read(
            f"look up image {ref!r}",
            lambda: self.client.describe_images(Owners=list(owners), Filters=[{"Name": "name", "Values": [ref]}]),
        ).get("Images", [])
        if not images:
            raise errors.ResourceMissing(
                f"aws: no AMI named {ref!r} owned by {', '.join(owners)} in {self.region}",
                code="InvalidAMIID.NotFound",
                hint="build and register the image first, or set provider_config.image_owners",
            )
        if len(images) > 1 and digest:
            own = [i for i in images if {t.get("Key"): t.get("Value") for t in i.get("Tags", [])}.get(
                LABEL_IMAGE) == digest and i.get("State", "available") == "available"]
            if own:
                images = sorted(own, key=lambda i: (i.get("CreationDate", ""), i.get("ImageId", "")))[:1]
        if len(images) > 1:
            ids = ", ".join(sorted(i.get("ImageId", "") for i in images))
            raise PermanentError(
                f"aws: {len(images)} AMIs are named {ref!r} ({ids}); infra will not guess",
                hint="pin the image by its id (ami-...)",
            )
        image_id = images[0].get("ImageId", "")
        with self._lock:
            self._images[key] = image_id
        return image_id

    def subnet_cidr(self, subnet: str) -> str:
        """The IPv4 CIDR of ``subnet`` (one DescribeSubnets per subnet and provider)."""
        with self._lock:
            cached = self._subnet_cidrs.get(subnet)
        if cached is not None:
            return cached
        subnets = self._planning_read(
            f"describe subnet {subnet}", lambda: self.client.describe_subnets(SubnetIds=[subnet])
        ).get("Subnets", [])
        if not subnets or not subnets[0].get("CidrBlock"):
            raise errors.ResourceMissing(f"aws: subnet {subnet} does not exist", code="InvalidSubnetID.NotFound")
        cidr = subnets[0].get("CidrBlock", "")
        with self._lock:
            self._subnet_cidrs[subnet] = cidr
        return cidr

    def address_for(self, spec: MemberSpec) -> str | None:
        """The member's fixed private address when its settings have ``address_offset``, else None.

        Deterministic (offset ``address_offset + placement // len(subnets)`` in subnet
        ``placement % len(subnets)``), so it is known before the instance exists and is the same
        in every process; the instance is launched with it as ``PrivateIpAddress``. A replacement
        reuses it, which the quorum policy's remove-before-add makes safe (EC2 answers
        ``InvalidIPAddress.InUse`` while the old instance still holds it: a transient error).
        Returns None when the subnet does not exist (``validate`` reports that); raises
        ConfigError when the member does not fit its subnet.
        """
        cfg = self.member_config(spec)
        subnet = cfg.subnet_for(spec.placement)
        if cfg.address_offset is None or subnet is None:
            return None
        try:
            cidr = self.subnet_cidr(subnet)
        except errors.ResourceMissing:
            return None
        try:
            return cfg.address_in(cidr, spec.placement)
        except ValueError as exc:
            raise ConfigError(f"{self._where(spec, 'address_offset')}: {exc}") from None

    # -- create / delete ---------------------------------------------------------------------------

    @staticmethod
    def user_data(spec: MemberSpec) -> str:
        """The member's files as LinuxKit metadata JSON. Holds secrets: never log it."""
        return json.dumps(spec.userdata(), sort_keys=True, separators=(",", ":"))

    def _tags(self, spec: MemberSpec, cfg: AwsConfig) -> builtins.list[TagTypeDef]:
        tags = {**cfg.tags, **spec.labels, "Name": spec.name}
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def launch_request(self, spec: MemberSpec) -> dict[str, Any]:
        """The RunInstances parameters for ``spec`` (without the ClientToken)."""
        cfg = self.member_config(spec)
        if cfg.region and cfg.region != self.region:
            raise ConfigError(
                f"{self._where(spec, 'region')}: {cfg.region} differs from the stack's region "
                f"{self.region}; one stack lives in one region"
            )
        image_id = self.resolve_image(self._image_ref(spec, cfg), cfg.image_owners,
                                      spec.image_digest if spec.image else None)
        user_data = self.user_data(spec)
        size = len(user_data.encode())
        if size > USER_DATA_MAX:
            raise PermanentError(
                f"aws: the configuration of {spec.member} is {size} bytes; EC2 user-data holds at most "
                f"{USER_DATA_MAX} bytes",
                hint="make the member's configuration files smaller",
            )
        tags = self._tags(spec, cfg)
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": spec.machine_type or cfg.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": user_data,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        params["MetadataOptions"] = {"HttpTokens": cfg.metadata_tokens, "HttpEndpoint": "enabled",
                                     "HttpPutResponseHopLimit": 1}
        subnet = cfg.subnet_for(spec.placement)
        if subnet:
            params["SubnetId"] = subnet
        if cfg.security_group_ids:
            params["SecurityGroupIds"] = list(cfg.security_group_ids)
        if cfg.key_name:
            params["KeyName"] = cfg.key_name
        if cfg.iam_instance_profile:
            profile = cfg.iam_instance_profile
            params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        address = spec.address or self.address_for(spec)
        if address:
            params["PrivateIpAddress"] = address
        return params

    def create(self, spec: MemberSpec) -> Instance:
        """Launch the instance named ``spec.name``, tagged with ``spec.labels`` at launch.

        Idempotent on the name: an instance of that name with the stack's tags is returned as it
        is (one DescribeInstances), and the launch carries a ClientToken derived from the name.
        When create raises, the instance may or may not exist: the executor's retry (same token)
        or the next pass's ``list`` (tags are set atomically) finds it. Returns the instance as
        launched (pending). Raises ResourceMissing for a missing AMI, subnet or instance type,
        QuotaError when the account is out of instances or vCPUs, TransientError for throttling,
        capacity and 5xx answers.
        """
        existing = self._find_by_name(spec)
        if existing is not None:
            return existing
        params = self.launch_request(spec)
        cfg = self.member_config(spec)
        token = client_token(spec.name)
        for _ in range(MAX_TOKEN_STEPS):
            with errors.translate(f"launch {spec.name}"):
                resp = self.client.run_instances(**params, ClientToken=token)
            launched = resp.get("Instances", [])
            if not launched:
                raise TransientError(f"aws: launch {spec.name}: EC2 answered without an instance")
            raw = launched[0]
            if raw.get("State", {}).get("Name", "") in GONE_STATES:
                # EC2 remembered the token from an earlier incarnation that is gone now.
                token = client_token(spec.name, after=raw.get("InstanceId", ""))
                continue
            inst = self._to_instance(raw)
            # The response may omit the tags; they are the ones just sent (set atomically).
            return inst.model_copy(update={"name": spec.name, "labels": {**cfg.tags, **spec.labels}})
        raise PermanentError(
            f"aws: launch {spec.name}: EC2 answered {MAX_TOKEN_STEPS} client tokens in a row with "
            "terminated instances",
        )

    def delete(self, instance: Instance) -> None:
        """Terminate the instance after re-reading its tags.

        Refuses (PermanentError) an instance that does not carry this stack's ownership tags,
        whatever the caller's copy says. An instance that is already gone, shutting down or
        terminated is success. After a failed delete the instance is assumed to still exist.
        """
        action = f"terminate {instance.name} ({instance.id})"
        try:
            with errors.translate(f"read {instance.id} before terminating it"):
                resp = self.client.describe_instances(InstanceIds=[instance.id])
        except NotFoundError:
            return
        found = [raw for res in resp.get("Reservations", []) for raw in res.get("Instances", [])]
        if not found or found[0].get("State", {}).get("Name", "") in GONE_STATES:
            return
        require_owned("aws", self._to_instance(found[0]), self.stack)
        try:
            with errors.translate(action):
                self.client.terminate_instances(InstanceIds=[instance.id])
        except NotFoundError:
            return

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance:
        """``CreateTags`` for the labels that differ and ``DeleteTags`` for the ``infra-`` tags not
        in ``labels`` (a lifted protection), on the instance and its volumes; then the instance as
        it is now. Re-reads it first and refuses one that is not this stack's, or a change of an
        ownership tag."""
        with errors.translate(f"read {instance.id} before tagging it"):
            resp = self.client.describe_instances(InstanceIds=[instance.id])
        found = [raw for res in resp.get("Reservations", []) for raw in res.get("Instances", [])]
        if not found or found[0].get("State", {}).get("Name", "") in GONE_STATES:
            raise NotFoundError(f"aws: {instance.name} ({instance.id}) is gone")
        live = self._to_instance(found[0])
        require_label_update("aws", live, labels, self.stack)
        volumes = [m["Ebs"]["VolumeId"] for m in found[0].get("BlockDeviceMappings", [])
                   if m.get("Ebs", {}).get("VolumeId")]
        resources = [instance.id, *volumes]
        merged = merged_labels(live.labels, labels)
        changed = [{"Key": k, "Value": v} for k, v in merged.items() if live.labels.get(k) != v]
        dropped = [{"Key": k} for k in live.labels if k not in merged]
        if changed:
            with errors.translate(f"tag {instance.name} ({instance.id})"):
                self.client.create_tags(Resources=resources, Tags=changed)  # type: ignore[arg-type]
        if dropped:
            with errors.translate(f"untag {instance.name} ({instance.id})"):
                self.client.delete_tags(Resources=resources, Tags=dropped)  # type: ignore[arg-type]
        return live.model_copy(update={"labels": merged})

    # -- validate ------------------------------------------------------------------------------------

    def _missing(self, kind: str, key: str, call: Callable[[], T]) -> str | None:
        """None when ``call`` succeeds; EC2's explanation when it says the resource is missing.

        A resource found once is not asked about again by this provider (a daemon re-validates
        every pass; a resource deleted later makes the launch itself fail, clearly).
        """
        with self._lock:
            if (kind, key) in self._verified:
                return None
        try:
            call()
        except errors.ResourceMissing as exc:
            return exc.explanation
        with self._lock:
            self._verified.add((kind, key))
        return None

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        """Missing AMIs, unknown instance types, subnets, security groups or key pairs, user-data
        over 16 KB, and fixed addresses that collide or do not fit, before anything is launched.

        Makes only read calls (one per distinct image, type, subnet... the first time this
        provider sees it). Raises the mapped error when EC2 cannot be asked (credentials,
        throttling that outlasts the read retries): nothing can be concluded then.
        """
        problems: builtins.list[Problem] = []
        seen: set[tuple[str, str]] = set()

        def once(field: str, message: str) -> None:
            if (field, message) not in seen:
                seen.add((field, message))
                problems.append(Problem(field=field, message=message))

        images: dict[tuple[str, tuple[str, ...]], str] = {}
        types: dict[str, str] = {}
        subnets: dict[str, str] = {}
        groups: dict[str, str] = {}
        keys: dict[str, str] = {}
        addresses: dict[str, str] = {}
        configs: dict[str, AwsConfig] = {}
        for spec in members:
            try:
                cfg = self.member_config(spec)
            except ConfigError as exc:
                field, _, message = exc.message.partition(": ")
                once(field, message)
                continue
            configs[spec.name] = cfg
            if cfg.metadata_tokens == "required" and (spec.image_digest or not pinned(spec)) \
                    and not self.accepts_documents():
                once(f"groups.{spec.group}.provider_config.metadata_tokens",
                     "the group boots a LinuxKit image infra builds, and LinuxKit's metadata package reads "
                     "user-data with IMDSv1 GETs only (no session token): with metadata_tokens 'required' "
                     "its instances would boot without their configuration. Set metadata_tokens='optional' "
                     "for this stack (docs/providers/aws.md, 'IMDSv2')")
            if cfg.region and cfg.region != self.region:
                once(self._where(spec, "region"), f"{cfg.region} differs from the stack's region {self.region}")
            ref = spec.image or cfg.image
            if spec.image_digest is not None:
                pass  # built and pushed by the image pipeline before any create
            elif not ref:
                once(f"groups.{spec.group}.image", "an AMI id (ami-...) or AMI name is required on aws")
            else:
                where = f"groups.{spec.group}.image" if spec.image else self._where(spec, "image")
                images.setdefault((ref, tuple(cfg.image_owners)), where)
            itype = spec.machine_type or cfg.instance_type
            types.setdefault(
                itype, f"groups.{spec.group}.machine_type" if spec.machine_type else self._where(spec, "instance_type")
            )
            for subnet in cfg.subnets:
                subnets.setdefault(subnet, self._where(spec, "subnets"))
            for sg in cfg.security_group_ids:
                groups.setdefault(sg, self._where(spec, "security_group_ids"))
            if cfg.key_name:
                keys.setdefault(cfg.key_name, self._where(spec, "key_name"))
            size = len(self.user_data(spec).encode())
            if size > USER_DATA_MAX:
                once(
                    f"groups.{spec.group}",
                    f"the configuration of {spec.member} is {size} bytes; EC2 user-data holds at most "
                    f"{USER_DATA_MAX} bytes",
                )

        for (ref, owners), where in images.items():
            if AMI_ID_RE.match(ref):
                msg = self._missing("image", ref, lambda ref=ref: self._check_ami(ref))  # type: ignore[misc]
            else:
                msg = self._missing(
                    "image", f"{ref}@{','.join(owners)}",
                    lambda ref=ref, owners=owners: self.resolve_image(ref, owners),  # type: ignore[misc]
                )
            if msg:
                once(where, f"image {ref!r}: {msg}")
        for itype, where in types.items():

            def check_type(itype: str = itype) -> None:
                self._planning_read(
                    f"describe instance type {itype}",
                    lambda: self.client.describe_instance_types(InstanceTypes=[itype]),  # type: ignore[list-item]
                )

            if msg := self._missing("instance type", itype, check_type):
                once(where, f"instance type {itype!r} is not offered in {self.region}: {msg}")
        for subnet, where in subnets.items():
            if msg := self._missing("subnet", subnet, lambda subnet=subnet: self.subnet_cidr(subnet)):  # type: ignore[misc]
                once(where, f"subnet {subnet} does not exist in {self.region}: {msg}")
        for sg, where in groups.items():

            def check_sg(sg: str = sg) -> None:
                self._planning_read(
                    f"describe security group {sg}", lambda: self.client.describe_security_groups(GroupIds=[sg])
                )

            if msg := self._missing("security group", sg, check_sg):
                once(where, f"security group {sg} does not exist in {self.region}: {msg}")
        for key, where in keys.items():

            def check_key(key: str = key) -> None:
                self._planning_read(
                    f"describe key pair {key}", lambda: self.client.describe_key_pairs(KeyNames=[key])
                )

            if msg := self._missing("key pair", key, check_key):
                once(where, f"key pair {key!r} does not exist in {self.region}: {msg}")

        for spec in members:
            cfg_or_none = configs.get(spec.name)
            if cfg_or_none is None or cfg_or_none.address_offset is None:
                continue
            try:
                address = spec.address or self.address_for(spec)
            except ConfigError as exc:
                field, _, message = exc.message.partition(": ")
                once(field, message)
                continue
            if address is None:
                continue
            other = addresses.setdefault(address, spec.member)
            if other != spec.member:
                once(
                    self._where(spec, "address_offset"),
                    f"members {other} and {spec.member} would both get address {address}; give each "
                    "group sharing a subnet its own address_offset range",
                )
        return problems

    def _check_ami(self, image_id: str) -> None:
        images = self._planning_read(
            f"describe image {image_id}", lambda: self.client.describe_images(ImageIds=[image_id])
        ).get("Images", [])
        if not images:
            raise errors.ResourceMissing(f"aws: AMI {image_id} does not exist", code="InvalidAMIID.NotFound")
        state = images[0].get("State", "available")
        if state != "available":
            raise errors.ResourceMissing(
                f"aws: AMI {image_id} is {state}, not available", code="InvalidAMIID.Unavailable"
            )

    # -- discovery -----------------------------------------------------------------------------------

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        """An ``ec2_sd_configs`` fragment: Prometheus's own EC2 discovery filtered on the tags.

        Prometheus finds the running instances tagged with ``selector`` itself (it needs
        ``ec2:DescribeInstances`` and ``ec2:DescribeAvailabilityZones``, e.g. through its
        instance profile), so no address is written into its configuration. Tags arrive as
        ``__meta_ec2_tag_infra_member`` and so on; the prometheus role relabels them.
        """
        sd: dict[str, Any] = {
            "region": self.region,
            "port": port,
            "refresh_interval": "30s",
            "filters": [
                *({"name": f"tag:{k}", "values": [v]} for k, v in sorted(selector.items())),
                {"name": "instance-state-name", "values": ["running"]},
            ],
        }
        endpoint = endpoint_url()
        if endpoint:
            sd["endpoint"] = endpoint
            if self.accepts_documents():
                # infra's EC2 emulator: its discovery identity (DescribeInstances and
                # DescribeAvailabilityZones only, a random key per run), never infra's own key.
                key_id, secret = os.environ.get(SD_KEY_ENV, ""), os.environ.get(SD_SECRET_ENV, "")
                if key_id and secret:
                    sd["access_key"], sd["secret_key"] = key_id, secret
                sd["refresh_interval"] = "5s"
        return {"ec2_sd_configs": [sd]}

    def accepts_documents(self) -> bool:
        """True against infra's EC2 emulator (``GET /_emulator/info``; asked of an override only)."""
        endpoint = endpoint_url()
        if not endpoint:
            return False
        if self._emulator is None:
            import json as _json
            import urllib.request

            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest

            url = endpoint.rstrip("/") + "/_emulator/info"
            request = AWSRequest(method="GET", url=url)
            credentials = self.api.credentials()
            if credentials is None:
                self._emulator = False
                return False
            SigV4Auth(credentials, "ec2", self.region).add_auth(request)  # signed with the emulator's key
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=dict(request.headers.items())),
                                            timeout=5) as resp:
                    self._emulator = bool(_json.loads(resp.read()).get("boots"))
            except (OSError, ValueError):
                self._emulator = False
        return self._emulator
