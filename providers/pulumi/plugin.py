"""A Pulumi resource provider plugin, run the way the Pulumi engine runs it — with no Pulumi CLI.

Called by :mod:`providers.pulumi.provider`. :class:`Plugin` finds the binary
(``plugin_path``, else ``pulumi-resource-<name>`` on PATH, else
``$PULUMI_HOME/plugins/resource-<name>-v<version>/``, ``PULUMI_HOME`` defaulting to
``~/.pulumi``), serves a small Engine service on loopback (the plugin's ``Log`` calls become
infra's log lines), starts the plugin with that address as its last argument, reads the port it
prints on stdout and talks ``pulumirpc.ResourceProvider`` to it over gRPC. ``close`` stops it
(SIGINT, then SIGKILL by pid). A plugin that died is restarted on the next call (and configured
again); the call that was in flight fails as a transient error, which the executor retries.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2_grpc

from reconciler.core.errors import ConfigError, TransientError

_SEVERITY = {0: "debug", 1: "info", 2: "warning", 3: "error"}


def find_plugin(name: str, version: str | None, path: str | None) -> Path:
    """The plugin binary, or ConfigError saying where it was looked for."""
    if path:
        found = Path(path).expanduser()
        if found.is_file() and os.access(found, os.X_OK):
            return found
        raise ConfigError(f"provider_config.plugin_path: {found} is not an executable file",
                          field="provider_config.plugin_path")
    binary = f"pulumi-resource-{name}"
    on_path = shutil.which(binary)
    if on_path:
        return Path(on_path)
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    candidates = sorted((home / "plugins").glob(f"resource-{name}-v{version or '*'}/{binary}"))
    if candidates:
        return candidates[-1]
    raise ConfigError(
        f"provider_config.plugin: no {binary} on PATH nor under {home}/plugins/resource-{name}-v"
        f"{version or '*'}/", field="provider_config.plugin",
        hint=f"install it (pulumi plugin install resource {name} {version or '<version>'}), or set plugin_path")


def _die_with_parent() -> None:
    """In the plugin's process before exec: be killed when infra dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Engine(engine_pb2_grpc.EngineServicer):
    """The part of the Pulumi engine a resource plugin calls back: logging."""

    def __init__(self, log: Callable[[str, str], None]) -> None:
        self.log = log

    def Log(self, request: Any, context: Any) -> Any:
        self.log(_SEVERITY.get(int(request.severity), "info"), str(request.message))
        return empty_pb2.Empty()

    def GetRootResource(self, request: Any, context: Any) -> Any:
        return engine_pb2.GetRootResourceResponse(urn="")

    def SetRootResource(self, request: Any, context: Any) -> Any:
        return engine_pb2.SetRootResourceResponse()


class Plugin:
    """One running plugin process and its gRPC stub; thread-safe; restarted when it dies."""

    def __init__(self, binary: Path, *, log: Callable[[str, str], None], on_start: Callable[[Any], None],
                 start_timeout: float = 30.0) -> None:
        self.binary = binary
        self.log = log
        self.on_start = on_start
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: Any = None
        self.starts = 0
        self._engine = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="infra-pulumi-engine"))
        engine_pb2_grpc.add_EngineServicer_to_server(_Engine(log), self._engine)
        port = self._engine.add_insecure_port("127.0.0.1:0")
        self.engine_address = f"127.0.0.1:{port}"
        self._engine.start()

    def stub(self) -> Any:
        """The ResourceProvider stub of a live plugin, starting (and configuring) one if needed."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self._stub is not None:
                return self._stub
            if self._proc is not None:  # it died: say so, start another
                self.log("warning", f"plugin {self.binary.name} exited ({self._proc.returncode}); restarting it")
                self._drop()
            self._start()
            stub = self._stub
        self.on_start(stub)
        return stub

    def died(self, wait: float = 0.0) -> bool:
        """Whether the plugin process has exited (waiting up to ``wait`` seconds for it to)."""
        proc = self._proc
        if proc is None:
            return False
        try:
            proc.wait(timeout=wait) if wait else proc.poll()
        except subprocess.TimeoutExpired:
            return False
        return proc.poll() is not None

    def _start(self) -> None:
        proc = subprocess.Popen([str(self.binary), self.engine_address], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                preexec_fn=_die_with_parent)
        if proc.stderr is not None:  # its stderr reaches infra's log line by line, through the redactor
            threading.Thread(target=self._relay, args=(proc.stderr,), daemon=True,
                             name=f"infra-pulumi-stderr-{proc.pid}").start()
        port: list[str] = []
        reader = threading.Thread(target=lambda: port.append((proc.stdout.readline() if proc.stdout else "").strip()),
                                  daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if not port or not port[0].isdigit():
            proc.kill()
            proc.wait()
            raise TransientError(f"pulumi: plugin {self.binary} printed no port within {self.start_timeout:g}s "
                                 f"(it printed {port[0]!r})" if port and port[0] else
                                 f"pulumi: plugin {self.binary} printed no port within {self.start_timeout:g}s")
        self._proc = proc
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port[0]}")
        grpc.channel_ready_future(self._channel).result(timeout=self.start_timeout)
        self._stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
        self.starts += 1

    def _relay(self, stream: Any) -> None:
        """The plugin's stderr, each line to ``log`` (the provider's, which scrubs secrets)."""
        try:
            for line in stream:
                if line.strip():
                    self.log("warning", f"stderr: {line.rstrip()}")
        except (OSError, ValueError):
            return
        finally:
            stream.close()

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
        self._engine.stop(grace=None)


