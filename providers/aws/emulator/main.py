"""``infra emulator aws``: the EC2 emulator in the foreground.

Called through the ``infra.emulators`` entry point by the CLI. It serves moto's EC2 and EBS APIs on
127.0.0.1 (with :mod:`providers.aws.emulator.fidelity`'s fixes, without moto's default AMIs,
refusing unknown AMIs and instance types), creates a VPC in ``127.79.0.0/16`` with a subnet per
zone (``127.79.0.0/20`` in us-east-1a, ``127.79.16.0/20`` in us-east-1b) and a security group,
boots instances (:mod:`providers.aws.emulator.machines`), prints the shell exports a client
needs, one ``export NAME=value`` line each, then ``# ready``, and runs until SIGTERM or Ctrl-C,
when it stops every instance it booted and exits 0. A VPC or subnet outside 127.0.0.0/8 is
refused (:func:`loopback_only`). ``GET /_emulator/info`` says what it is
(infra's image push asks before it registers a LinuxKit YAML as an image).

Who may ask (:func:`_guard`, :func:`identities`): moto's own signature and IAM checks are on from
the first request (``INITIAL_NO_AUTH_ACTION_COUNT`` 0), with two IAM users made fresh on every run
with random keys: ``infra`` (``ec2:*`` and ``ebs:*``, exported as ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``) and ``discovery`` (``ec2:DescribeInstances`` and
``ec2:DescribeAvailabilityZones`` only, exported as ``INFRA_AWS_SD_ACCESS_KEY_ID`` and
``INFRA_AWS_SD_SECRET_ACCESS_KEY``; the aws provider gives them to Prometheus's EC2 discovery). An
unsigned request, or one signed with another key, is ``AuthFailure``. The ``Host`` header must name
this server by its loopback address (DNS rebinding), moto's admin API (``/moto-api/``, which could
reset the state or switch authentication off) is not served, ``OPTIONS`` is refused and no CORS
header is sent, and ``/_emulator/info`` answers only a request signed with the ``infra`` key.

``machines="vm"`` (``--machines vm``): instances are QEMU VMs booted from the disks their AMIs'
snapshots hold (:class:`reconciler.kit.vmhost.VmHost`), refused outside a private network
namespace. The VPC is then ``10.0.0.0/16`` with the subnets ``10.0.0.0/20`` and
``10.0.16.0/20`` on a bridge (gateways .1, where the API is served, so the VMs' Prometheus
discovers through it) with the metadata server (IMDSv2) at 169.254.169.254; the exports name the
gateway, the Debian image builder (``INFRA_IMAGE_BUILDER=debian``) and ``INFRA_NETWORK_ALLOW``
with the VPC, only inside that namespace.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

REGION = "us-east-1"
VPC = "127.79.0.0/16"
SUBNETS = (("127.79.0.0/20", "us-east-1a"), ("127.79.16.0/20", "us-east-1b"))
#: In VM mode: a VPC of real-looking addresses on the bridge, the API on the first gateway.
VM_VPC = "10.0.0.0/16"
VM_SUBNETS = (("10.0.0.0/20", "us-east-1a"), ("10.0.16.0/20", "us-east-1b"))
VM_GATEWAY = "10.0.0.1"
VM_BRIDGE = "infra-ec2"
#: The IAM policies of the emulator's two users (see the module docstring).
POLICIES = {
    "infra": ["ec2:*", "ebs:*"],
    "discovery": ["ec2:DescribeInstances", "ec2:DescribeAvailabilityZones"],
}


def identities() -> dict[str, tuple[str, str]]:
    """Make the emulator's IAM users in moto, with new random keys: name → (key id, secret)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    out: dict[str, tuple[str, str]] = {}
    for name, actions in POLICIES.items():
        user = iam.create_user(REGION, f"{name}-{secrets.token_hex(4)}")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(user.name, f"infra-emulator-{name}", json.dumps(policy))
        key = iam.create_access_key(user.name)
        out[name] = (key.access_key_id, key.secret_access_key)
    return out


def _signed(environ: dict[str, Any]) -> bool:
    """Whether a plain request carries a valid SigV4 signature of a known key (moto's own check)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.iam.access_control import IAMRequest

    headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")}
    if "Authorization" not in headers or "X-Amz-Date" not in headers:
        return False
    path = environ.get("PATH_INFO", "") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
    try:
        IAMRequest(account_id=DEFAULT_ACCOUNT_ID, method=environ.get("REQUEST_METHOD", "GET"), path=path, data={},
                   body=b"", headers=headers, action="DescribeEmulator").check_signature()
    except Exception:  # moto raises its own HTTP exceptions for a bad key or signature
        return False
    return True


#: The shape of a SigV4 ``Authorization`` header (what moto's check parses).
_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=[A-Z0-9]{16,128}/\d{8}/[a-z0-9-]+/[a-z0-9-]+/aws4_request, ?"
                    r"SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{64}$")


def _refuse(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors></Response>").encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _guard(app: Callable[..., Iterable[bytes]], port_of: Callable[[], int],
           address: str = "127.0.0.1") -> Callable[..., Iterable[bytes]]:
    """moto's WSGI app behind the checks of the module docstring, plus ``/_emulator/info``."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        port = port_of()
        host = str(environ.get("HTTP_HOST", "")).lower()
        path = str(environ.get("PATH_INFO", ""))
        if host not in {f"127.0.0.1:{port}", f"localhost:{port}", f"{address}:{port}"}:
            return _refuse(start_response, "403 Forbidden", "Forbidden",
                           f"Host {host[:80]!r} is not this emulator ({address}:{port})")
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return _refuse(start_response, "405 Method Not Allowed", "MethodNotAllowed",
                           "this emulator answers no browser")
        if path.startswith("/moto-api"):
            return _refuse(start_response, "404 Not Found", "NotFound", "moto's admin API is not served here")
        if not _SIGV4.match(str(environ.get("HTTP_AUTHORIZATION", ""))) or "HTTP_X_AMZ_DATE" not in environ:
            # moto's own check would fail on a missing or malformed header with a 500 page
            return _refuse(start_response, "401 Unauthorized", "AuthFailure",
                           "the request is not signed: sign it with the emulator's key (AWS_ACCESS_KEY_ID it printed)")
        if path == "/_emulator/info":
            if not _signed(environ):
                return _refuse(start_response, "401 Unauthorized", "AuthFailure",
                               "sign the request with the emulator's key (AWS_ACCESS_KEY_ID it printed)")
            body = json.dumps({"emulator": "ec2", "boots": True}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        def no_cors(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [(k, v) for k, v in headers if not k.lower().startswith("access-control-")],
                                  *rest)

        return app(environ, no_cors)

    return wsgi


def loopback_only(allowed: str = "127.0.0.0/8") -> None:
    """Refuse VPCs and subnets outside 127.0.0.0/8 (``allowed``: the VM mode's VPC): emulated
    instances get loopback addresses only.

    (moto creates a default VPC in 172.31.0.0/16 when it starts a region; that one is left alone,
    and any instance launched into it boots nothing: its address is not loopback.)
    """
    import ipaddress

    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.subnets import SubnetBackend
    from moto.ec2.models.vpcs import VPCBackend

    loopback = ipaddress.ip_network(allowed)
    create_vpc, create_subnet = VPCBackend.create_vpc, SubnetBackend.create_subnet

    def check(cidr: str) -> None:
        if not ipaddress.ip_network(cidr, strict=False).subnet_of(loopback):  # type: ignore[arg-type]
            hint = " (loopback addresses only; try 127.79.0.0/16)" if allowed == "127.0.0.0/8" else ""
            raise EC2ClientError("InvalidParameterValue", f"the EC2 emulator gives instances addresses of "
                                 f"{allowed} only: {cidr} is outside it{hint}")

    def vpc(self: Any, cidr_block: str, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("is_default"):
            check(cidr_block)
        return create_vpc(self, cidr_block, *args, **kwargs)

    def subnet(self: Any, vpc_id: str, cidr_block: str, *args: Any, **kwargs: Any) -> Any:
        if not self.get_vpc(vpc_id).is_default:
            check(cidr_block)
        return create_subnet(self, vpc_id, cidr_block, *args, **kwargs)

    VPCBackend.create_vpc = vpc  # type: ignore[method-assign]
    SubnetBackend.create_subnet = subnet  # type: ignore[method-assign]


def run(port: int, state: Path, machines: str = "process", vm_memory: int = 512) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop."""
    vm = machines == "vm"
    address = VM_GATEWAY if vm else "127.0.0.1"
    vpc_cidr, subnet_cidrs = (VM_VPC, VM_SUBNETS) if vm else (VPC, SUBNETS)
    os.environ.update({"MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "MOTO_ENABLE_AMI_VALIDATION": "true",
                       "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true", "AWS_DEFAULT_REGION": REGION,
                       "MOTO_DISABLE_GLOBAL_CORS": "true", "INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(key, None)
    from moto import settings

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto checks signatures and IAM from the first request
    keys = identities()
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = keys["infra"]
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString  # type: ignore[attr-defined]

    from providers.aws.emulator import fidelity
    from providers.aws.emulator.machines import Ec2Machines

    fidelity.apply(setattr)
    loopback_only(VM_VPC if vm else "127.0.0.0/8")
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    machines_ref: list[Ec2Machines] = []

    def console_output(self: Any) -> Any:
        from moto.core.responses import ActionResult
        from moto.core.utils import utcnow

        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        text = machines_ref[0].console(instance.id) if machines_ref else ""
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                             "Output": Base64EncodedString.from_raw_string(text)})

    General.get_console_output = console_output  # type: ignore[method-assign]
    bound: list[int] = []
    vms = None
    if vm:
        from reconciler.kit.vmhost import VmHost

        if os.environ.get("INFRA_NETWORK_ALLOW"):  # the emulator calls its own API on the gateway
            os.environ["INFRA_NETWORK_ALLOW"] += f",{VM_VPC}"

        vms = VmHost(state / "vm", bridge=VM_BRIDGE, subnets=[c for c, _ in VM_SUBNETS], flavor="aws",
                     memory_mib=vm_memory, metadata=lambda a: machines_ref[0].guest(a) if machines_ref else None,
                     log=lambda m: print(f"# {m}", file=sys.stderr, flush=True)).start()
    try:
        return _serve(port, address, keys, vm, vpc_cidr, subnet_cidrs, vms, machines_ref, bound, state)
    finally:
        if vms is not None:
            vms.stop()


def _serve(port: int, address: str, keys: dict[str, tuple[str, str]], vm: bool, vpc_cidr: str,
           subnet_cidrs: tuple[tuple[str, str], ...], vms: Any, machines_ref: list[Any], bound: list[int],
           state: Path) -> int:
    """The server, the VPC and the machines until SIGTERM/SIGINT (:func:`run`'s second half)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from providers.aws.emulator.machines import Ec2Machines
    from providers.aws.session import new_session

    app = _guard(DomainDispatcherApplication(create_backend_app), lambda: bound[0], address)
    server = make_server(address, port, app, threaded=True)
    bound.append(server.server_address[1])
    url = f"http://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="ec2-emulator", daemon=True)
    thread.start()
    session = new_session()
    ec2 = session.client("ec2", region_name=REGION, endpoint_url=url)
    ebs = session.client("ebs", region_name=REGION, endpoint_url=url)
    vpc = ec2.create_vpc(CidrBlock=vpc_cidr)["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for cidr, zone in subnet_cidrs]
    group = ec2.create_security_group(GroupName="infra-emulator", Description="etcd 2379/2380, 9090",
                                      VpcId=vpc)["GroupId"]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = Ec2Machines(ec2, ebs, state, vms=vms, log=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    machines_ref.append(watcher)
    watcher.start()
    try:
        exports = {"AWS_ENDPOINT_URL": url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                   "AWS_ACCESS_KEY_ID": keys["infra"][0], "AWS_SECRET_ACCESS_KEY": keys["infra"][1],
                   "INFRA_AWS_SD_ACCESS_KEY_ID": keys["discovery"][0],
                   "INFRA_AWS_SD_SECRET_ACCESS_KEY": keys["discovery"][1],
                   "AWS_EC2_METADATA_DISABLED": "true", "INFRA_AWS_SUBNETS": ",".join(subnets),
                   "INFRA_AWS_SECURITY_GROUPS": group, "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
        if vm:
            exports.update({"INFRA_IMAGE_BUILDER": "debian", "INFRA_NETWORK_ALLOW": f"127.0.0.0/8,{VM_VPC}"})
        for key, value in exports.items():
            print(f"export {key}={shlex.quote(value)}")
        print("# ready", flush=True)
        stop.wait()
    finally:
        watcher.stop()
        server.shutdown()
    return 0
