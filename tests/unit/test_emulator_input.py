"""Property tests of the emulators' request parsing and of etcd's flag files: outside input.

* The GCE emulator, given any method, path, headers and body: without its token it answers 401
  (403 for another Host) and nothing else; with it, never a server error, always a JSON body; and
  it keeps answering afterwards.
* The EC2 emulator's guard (in front of moto), given any request: it reaches moto only with a
  loopback Host and a well-formed SigV4 ``Authorization``; moto's admin API never; a preflight
  never.
* etcd's ``.flags`` files: any value without a line break is exactly one argument, read back as
  written by a real ``/bin/sh`` through the wrapper's loop; a line break is refused.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client
from werkzeug.wrappers import Response

from plugins.etcd import render
from providers.aws.emulator.main import _guard
from providers.gcp.emulator.compute import FakeCompute

text = st.text(alphabet=st.sampled_from(list("ab/?&=%.:;,{}[]\"' \\\t$`é0123456789-_")), max_size=60)
paths = st.one_of(
    st.sampled_from(["/compute/v1/projects/my-project/aggregated/instances",
                     "/compute/v1/projects/my-project/zones/us-central1-a/instances",
                     "/compute/v1/projects/my-project/global/images", "/_admin/instances", "/_admin/config",
                     "/_emulator/info", "/_emulator/sd/my-project", "/storage/v1/b/x/o",
                     "/upload/storage/v1/b/x/o", "/moto-api/reset", "/"]),
    text.map(lambda t: "/" + urllib.parse.quote(t, safe="/?&=%:;,{}$")),
)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
bodies = st.one_of(st.just(b""), st.binary(max_size=200), text.map(str.encode),
                   st.dictionaries(text, text, max_size=3).map(lambda d: json.dumps(d).encode()))
content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "", "application/json; charset=utf-8"])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.01, boot_delay=0.01) as server:
        yield server


def ask(fake: FakeCompute, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, body=bodies, kind=content_types,
       auth=st.sampled_from(["none", "wrong", "sd", "good"]), host=st.sampled_from(["good", "evil", "none"]))
def test_the_gce_emulator_answers_any_request_as_it_should(
    fake: FakeCompute, method: str, path: str, body: bytes, kind: str, auth: str, host: str
) -> None:
    headers: dict[str, str] = {}
    if host != "none":
        headers["Host"] = f"127.0.0.1:{fake.port}" if host == "good" else "attacker.example"
    token = {"none": None, "wrong": "not-the-token", "sd": fake.sd_token, "good": fake.token}[auth]
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if kind:
        headers["Content-Type"] = kind
    status, raw = ask(fake, method, path, body, headers)
    if host != "good":
        assert status in (403, 501) or (method == "OPTIONS" and status == 405), (status, raw)
    elif method == "OPTIONS":
        assert status == 405
    elif method == "HEAD":
        assert status in (401, 404, 405, 501) or status < 300
    elif auth in ("none", "wrong") or (auth == "sd" and not path.startswith("/_emulator/sd/")):
        assert status == 401, (status, raw)
    else:
        assert status < 500, (method, path, body, kind, status, raw)
    if method not in ("HEAD",) and raw:
        json.loads(raw)  # every answer is JSON, errors included
    # ... and the server still answers.
    assert ask(fake, "GET", "/_emulator/info", b"", {"Host": f"127.0.0.1:{fake.port}",
                                                      "Authorization": f"Bearer {fake.token}"})[0] == 200


def _reached() -> tuple[Any, list[str]]:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return Response("moto", headers={"Access-Control-Allow-Origin": "*"})(environ, start_response)

    return _guard(app, lambda: 5000), seen


SIGNED = ("AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/20261207/us-east-1/ec2/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature=" + "a" * 64)


@settings(max_examples=300, deadline=None)
@given(method=methods, path=paths, body=bodies, host=st.sampled_from(["127.0.0.1:5000", "localhost:5000",
                                                                      "attacker.example", "127.0.0.1:5001", ""]),
       authorization=st.one_of(st.just(SIGNED), st.just(""), text, text.map(lambda t: "AWS4-HMAC-SHA256 " + t)),
       dated=st.booleans())
def test_the_ec2_emulators_guard_lets_through_only_signed_loopback_requests(
    method: str, path: str, body: bytes, host: str, authorization: str, dated: bool
) -> None:
    app, seen = _reached()
    headers = {"Host": host, **({"Authorization": authorization} if authorization else {}),
               **({"X-Amz-Date": "20261207T000000Z"} if dated else {})}
    resp = Client(app).open(path.split("?")[0], method=method, data=body, headers=headers)
    through = bool(seen)
    if through:
        assert host in ("127.0.0.1:5000", "localhost:5000") and authorization == SIGNED and dated
        assert method != "OPTIONS" and not path.startswith("/moto-api") and path != "/_emulator/info"
        assert not any(k.lower().startswith("access-control-") for k, _ in resp.headers.items())
    else:
        assert resp.status_code in (401, 403, 404, 405), resp.status_code


flag_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"),
                      max_size=40)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(flag_values, min_size=1, max_size=4))
def test_a_flag_value_is_exactly_one_argument_whatever_it_holds(values: list[str]) -> None:
    text = render.flags_text("test", {f"flag-{i}": v for i, v in enumerate(values)})
    assert text.count("\n") == len(values) + 1
    # The wrapper's own loop, run by a real /bin/sh: each line one argument, nothing expanded.
    loop = ('set --; while IFS= read -r line || [ -n "$line" ]; do case "$line" in ""|"#"*) continue;; esac; '
            'set -- "$@" "$line"; done; for a in "$@"; do printf "%s\\0" "$a"; done')
    out = subprocess.run(["/bin/sh", "-c", loop], input=text.encode(), capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [f"--flag-{i}={v}".encode() for i, v in enumerate(values)]
    with pytest.raises(ValueError, match="line break"):
        render.flags_text("test", {"flag": values[0] + "\n--force-new-cluster=true"})
