"""The daemon's HTTP server answers only its own clients, within bounds.

Beyond loopback it refuses to start without a bearer token; with one, every request must carry it.
A slow client is cut off, connections beyond the cap are answered 503 at once, and a page request
never runs Graphviz (the picture is drawn once per pass).
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.daemon import metrics, page
from reconciler.daemon.metrics import DaemonMetrics, HealthReport, MetricsServer
from tests.daemon.conftest import Harness, is_pass


def _server(**kw: object) -> MetricsServer:
    server = MetricsServer("127.0.0.1", 0, DaemonMetrics(), lambda: HealthReport(True, {}),
                           page=lambda: "<p>page</p>", **kw)  # type: ignore[arg-type]
    server.start()
    return server


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_beyond_loopback_the_daemon_needs_a_token(harness: Harness, tmp_path: Path) -> None:
    stack = harness.stack_file("open", size=1, provider="memory")
    refused = harness.infra("daemon", str(stack), "--metrics-addr", "0.0.0.0:0")
    assert refused.returncode == 1
    assert "serving beyond loopback needs a bearer token" in refused.stderr and "--http-token-file" in refused.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    bad = harness.infra("daemon", str(stack), "--metrics-addr", "0.0.0.0:0", "--http-token-file", str(short))
    assert bad.returncode == 1 and "at least 16 characters" in bad.stderr

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-some-length\n")
    d = harness.daemon(stack, interval=1, extra=("--http-token-file", str(token_file)))
    d.wait_for(is_pass(), timeout=60, what="a pass")
    url = d.metrics_url
    assert _get(f"{url}/metrics") == 401 and _get(f"{url}/", "wrong-token-wrong-token") == 401
    assert _get(f"{url}/metrics", "s3cret-token-of-some-length") == 200
    assert "s3cret" not in d.log_path.read_text()  # the token is never logged
    assert d.terminate() == 0


def test_a_slow_client_is_cut_off_and_connections_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics._Handler, "timeout", 0.5)
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 2)
    server = _server()
    host, port = server.server_address[:2]
    try:
        slow = [socket.create_connection((str(host), int(port))) for _ in range(2)]  # send nothing
        time.sleep(0.1)
        third = socket.create_connection((str(host), int(port)))
        third.settimeout(5)
        assert third.recv(100).startswith(b"HTTP/1.0 503")  # at once, not queued
        third.close()
        for conn in slow:  # each idle connection is closed by the server after its timeout
            conn.settimeout(5)
            assert conn.recv(100) == b""
            conn.close()
        assert _get(f"http://{host}:{port}/metrics") == 200  # slots are free again
    finally:
        server.stop()


def test_a_page_request_never_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.views import graph

    def boom(*a: object, **k: object) -> bytes:
        raise AssertionError("the page drew the graph on a request")

    monkeypatch.setattr(graph, "render", boom)
    view = page.StackView(stack="s", provider="local", path="s.py", svg="<figure class='graph'><svg/></figure>")
    html = page.render([page.StackPage(view=view, history=[], leading=True, name="s")])
    assert "<svg/>" in html
