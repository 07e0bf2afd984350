"""A Pulumi resource provider plugin, in Python with the SDK's gRPC stubs, for tests only.

``pulumi-resource-fakecloud`` (``tests/pulumi/bin``) runs this module. It is a real plugin
process speaking ``pulumirpc.ResourceProvider`` over gRPC, started the way the Pulumi engine
starts one (the engine's address as the last argument; it prints its port on stdout), and it
behaves as the Terraform-bridged providers infra targets (pulumi-hcloud, pulumi-digitalocean) do:

* one resource type, ``fakecloud:index/server:Server`` or ``hcloud:index/server:Server``
  (inputs ``name``, ``serverType``, ``image``, ``labels``, ``userData``, as pulumi-hcloud names
  them: ``tests/pulumi/hcloud_contract.json``), with *integer* ids (as strings, like hcloud's);
  run as ``pulumi-resource-hcloud`` it stands in for pulumi-hcloud;
* ``Check`` refuses a missing ``name`` or an unknown ``serverType`` (``CheckFailure`` naming the
  property) and fills defaults; ``CheckConfig`` requires a ``token``; a wrong token makes every
  call fail as ``unauthorized``;
* errors are gRPC ``UNKNOWN`` with the cloud's text (``error: server name is already used
  (uniqueness_error)``, ``error: limit of 3600 requests per hour reached (rate_limit_exceeded)``);
* outputs carry a secret-wrapped ``rootPassword`` (its one output pulumi-hcloud does not have:
  it exercises how infra handles secret outputs);
* ``Read`` with empty properties reads the resource as an import; an id that does not exist
  answers an empty id; ``Delete`` refuses a request without the resource's properties;
* ``Invoke …/getServers:getServers`` with ``withSelector`` (``k=v,k2=v2``) lists
  servers, like hcloud's ``getServers``;
* it logs to the engine on ``Configure`` (``Log``).

The "cloud" is a JSON file (``FAKECLOUD_STATE``), locked per call, so tests can look at it, add
servers behind infra's back and share it between processes. Fault injection, from a JSON file
(``FAKECLOUD_FAULTS``, read on every call): ``{"rate_limit": N}`` answers the next N calls as
rate limited; ``FAKECLOUD_CREATE_SECONDS`` makes each create take that long; ``{"lose_create": N}`` makes the next N creates happen and then fail as a timeout
(a lost answer); ``{"crash_create": N}`` makes the next N creates happen and the process exit
before answering.

* ``Diff`` says ``labels`` change in place and every other input replaces; ``Update`` changes the
  labels (infra's in-place label updates);

Not reproduced: previews, other resource types,
real networking (servers get loopback addresses only; nothing boots), pagination of the list.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, plugin_pb2, provider_pb2, provider_pb2_grpc

#: The types and functions it serves: its own tokens, and pulumi-hcloud's (it stands in for
#: ``pulumi-resource-hcloud`` too, with the names of ``tests/pulumi/hcloud_contract.json``).
TYPES = {"fakecloud:index/server:Server", "hcloud:index/server:Server"}
LISTS = {"fakecloud:index/getServers:getServers", "hcloud:index/getServers:getServers"}
SERVER_TYPES = {"cx22", "cx32", "cpx11"}
#: A server's inputs, as pulumi-hcloud names them.
INPUTS = ("name", "serverType", "image", "labels", "userData")
#: What one item of getServers' ``servers`` carries (a subset of pulumi-hcloud's GetServersServer).
LIST_ITEM = ("id", "name", "labels", "ipv4Address", "status", "serverType", "image")
SECRET_KEY = "4dabf18193072939515e22adb298388d"
SECRET = {SECRET_KEY: "1b47061264138c4ac30d75fd1eb44270"}
VERSION = "0.1.0"


def struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(doc)
    return s


def plain(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain values, secret-wrapped inputs unwrapped (as a provider that accepts secrets)."""
    out: dict[str, Any] = _unwrap(json_format.MessageToDict(s))
    return out


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270":
            return _unwrap(value.get("value"))
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class Cloud:
    """The servers, in a JSON file shared by every plugin process of a test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def state(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = json.loads(self.path.read_text()) if self.path.exists() else {"next_id": 1000, "servers": {}}
            yield doc
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def fault(kind: str) -> bool:
    """Take one fault of ``kind`` from the faults file, if one is queued."""
    path = os.environ.get("FAKECLOUD_FAULTS")
    if not path or not Path(path).exists():
        return False
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(Path(path).read_text() or "{}")
        if int(doc.get(kind, 0)) <= 0:
            return False
        doc[kind] = int(doc[kind]) - 1
        Path(path).write_text(json.dumps(doc))
        return True


class FakeCloud(provider_pb2_grpc.ResourceProviderServicer):
    def __init__(self, engine: str) -> None:
        self.cloud = Cloud(Path(os.environ["FAKECLOUD_STATE"]))
        self.engine = engine_pb2_grpc.EngineStub(grpc.insecure_channel(engine)) if engine else None
        self.token: str | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def _guard(self, context: grpc.ServicerContext) -> None:
        if fault("rate_limit"):
            context.abort(grpc.StatusCode.UNKNOWN, "error: limit of 3600 requests per hour reached (rate_limit_exceeded)")
        if self.token is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the provider is not configured")
        if self.token != os.environ.get("FAKECLOUD_TOKEN", "good-token"):  # as some clouds, quoting the token
            context.abort(grpc.StatusCode.UNKNOWN,
                          f"error: unable to authenticate with token {self.token} (unauthorized, 401)")

    @staticmethod
    def _outputs(server: dict[str, Any]) -> dict[str, Any]:
        return {**server, "id": server["id"], "rootPassword": {**SECRET, "value": server["rootPassword"]}}

    # -- configuration ---------------------------------------------------------------------------

    def GetPluginInfo(self, request: Any, context: Any) -> Any:
        return plugin_pb2.PluginInfo(version=VERSION)

    def CheckConfig(self, request: Any, context: Any) -> Any:
        news = plain(request.news)
        if not news.get("token"):
            return provider_pb2.CheckResponse(inputs=request.news, failures=[
                provider_pb2.CheckFailure(property="token", reason="a token is required (HCLOUD-like API token)")])
        return provider_pb2.CheckResponse(inputs=request.news)

    def Configure(self, request: Any, context: Any) -> Any:
        args = plain(request.args)
        self.token = args.get("token") or request.variables.get("fakecloud:config:token")
        # a careless plugin: its configuration, token included, on stderr (infra must scrub it)
        print(f"fakecloud: configured with token={self.token}", file=sys.stderr, flush=True)
        if self.engine is not None:
            self.engine.Log(engine_pb2.LogRequest(severity=engine_pb2.INFO, message="fakecloud configured"))
        return provider_pb2.ConfigureResponse(acceptSecrets=True, acceptResources=True)

    # -- resources -----------------------------------------------------------------------------

    def Check(self, request: Any, context: Any) -> Any:
        news = plain(request.news)
        failures = []
        if request.type and request.type not in TYPES:
            failures.append(provider_pb2.CheckFailure(property="", reason=f"unknown resource type {request.type}"))
        if not news.get("name"):
            failures.append(provider_pb2.CheckFailure(property="name", reason="name is required"))
        server_type = news.setdefault("serverType", "cx22")
        if server_type not in SERVER_TYPES:
            failures.append(provider_pb2.CheckFailure(
                property="serverType", reason=f"server type {server_type!r} does not exist (try {sorted(SERVER_TYPES)})"))
        news.setdefault("image", "debian-12")
        news.setdefault("labels", {})
        raw = json_format.MessageToDict(request.news)  # inputs that came as secrets stay secrets
        for key, value in raw.items():
            if isinstance(value, dict) and value.get(SECRET_KEY) and key in news:
                news[key] = {**SECRET, "value": news[key]}
        return provider_pb2.CheckResponse(inputs=struct(news), failures=failures)

    def Create(self, request: Any, context: Any) -> Any:
        self._guard(context)
        props = plain(request.properties)
        secret_inputs = sorted(k for k, v in json_format.MessageToDict(request.properties).items()
                               if isinstance(v, dict) and v.get("4dabf18193072939515e22adb298388d"))
        time.sleep(float(os.environ.get("FAKECLOUD_CREATE_SECONDS", "0")))  # a cloud takes its time
        with self.cloud.state() as doc:
            if any(s["name"] == props["name"] for s in doc["servers"].values()):
                context.abort(grpc.StatusCode.UNKNOWN, "error: server name is already used (uniqueness_error)")
            server_id = doc["next_id"]
            doc["next_id"] += 1
            n = server_id - 1000
            server = {"id": server_id, "name": props["name"], "serverType": props["serverType"],
                      "image": props["image"], "labels": props.get("labels", {}), "userData": props.get("userData", ""),
                      "status": "running", "ipv4Address": f"127.92.{n // 250 % 250}.{n % 250 + 1}",
                      "rootPassword": secrets.token_hex(8)}
            doc.setdefault("secret_inputs", {})[str(server_id)] = secret_inputs
            doc["servers"][str(server_id)] = server
        if fault("crash_create"):
            os._exit(3)
        if fault("lose_create"):
            context.abort(grpc.StatusCode.UNKNOWN, "error: context deadline exceeded (timeout)")
        return provider_pb2.CreateResponse(id=str(server_id), properties=struct(self._outputs(server)))

    def Read(self, request: Any, context: Any) -> Any:
        self._guard(context)
        with self.cloud.state() as doc:
            server = doc["servers"].get(request.id)
        if server is None:
            return provider_pb2.ReadResponse(id="")
        outputs = self._outputs(server)
        inputs = {k: server[k] for k in ("name", "serverType", "image", "labels", "userData")}
        return provider_pb2.ReadResponse(id=request.id, properties=struct(outputs), inputs=struct(inputs))

    def Diff(self, request: Any, context: Any) -> Any:
        """As pulumi-hcloud's server: ``labels`` change in place; ``name``, ``serverType``,
        ``image`` and ``userData`` replace the server."""
        self._guard(context)
        olds, news = plain(request.old_inputs) or plain(request.olds), plain(request.news)
        changed = sorted(k for k in set(olds) | set(news) if k in INPUTS and olds.get(k) != news.get(k))
        replaces = [k for k in changed if k != "labels"]
        return provider_pb2.DiffResponse(
            changes=provider_pb2.DiffResponse.DIFF_SOME if changed else provider_pb2.DiffResponse.DIFF_NONE,
            diffs=changed, replaces=replaces)

    def Update(self, request: Any, context: Any) -> Any:
        """Labels in place (anything else is refused: a replacement, which Diff announced)."""
        self._guard(context)
        news = plain(request.news)
        with self.cloud.state() as doc:
            server = doc["servers"].get(request.id)
            if server is None:
                context.abort(grpc.StatusCode.UNKNOWN, f"error: server {request.id} not found (not_found)")
            for key in ("name", "serverType", "image", "userData"):
                if key in news and news[key] != server[key]:
                    context.abort(grpc.StatusCode.UNKNOWN, f"error: {key} cannot be changed in place")
            server["labels"] = news.get("labels", {})
        return provider_pb2.UpdateResponse(properties=struct(self._outputs(server)))

    def Delete(self, request: Any, context: Any) -> Any:
        self._guard(context)
        if not plain(request.properties).get("name"):
            context.abort(grpc.StatusCode.UNKNOWN, "error: the resource's properties are required to delete it")
        with self.cloud.state() as doc:
            doc["servers"].pop(request.id, None)
        return empty_pb2.Empty()

    def Invoke(self, request: Any, context: Any) -> Any:
        self._guard(context)
        if request.tok not in LISTS:
            context.abort(grpc.StatusCode.UNKNOWN, f"error: unknown function {request.tok}")
        wanted = {}
        for part in filter(None, str(plain(request.args).get("withSelector", "")).split(",")):
            key, _, value = part.partition("=")
            wanted[key] = value
        with self.cloud.state() as doc:
            found = [{k: s[k] for k in LIST_ITEM if k in s} for s in doc["servers"].values()
                     if wanted.items() <= dict(s.get("labels", {})).items()]
        return provider_pb2.InvokeResponse(**{"return": struct({"servers": found, "id": "servers"})})


def main() -> None:
    engine = sys.argv[1] if len(sys.argv) > 1 else ""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(FakeCloud(engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    signal.signal(signal.SIGINT, lambda signum, frame: server.stop(0))  # the engine stops plugins with SIGINT
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
