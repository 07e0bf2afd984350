"""``secret_env``: a value the service sees and nothing else shows.

Through the real CLI on the local provider: a ``Command`` group with a secret variable serves it
back (the service really has it in its environment), while the value appears in no plan, saved
plan, ``--json`` output, status, LinuxKit document (the instance's and the image's), instance
record or log; its one copy on disk is the member's 0600 secret file. Changing it does not roll the
members (only the names are in the spec); ``--replace`` delivers the new value.
"""

from __future__ import annotations

import stat
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Infra

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-'quote\"-$(touch /tmp/pwned)-\\n"
NEW_SECRET = "rotated-value-0042"

STACK = '''
from plugins.command import Command
from reconciler import Stack

SERVE = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("API_TOKEN", "<unset>").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], 8080), H).serve_forever()
"""

stack = Stack(name="secrets", groups=[Command(
    name="api", size=1, command=["python3", "-c", SERVE, "{address}"], port=8080, health="http",
    env={"MODE": "demo"}, secret_env={"API_TOKEN": %r},
)])
'''


def served(infra: Infra, S: str) -> str:
    (address,) = [s["address"] for s in infra.json("status", S)["groups"][0]["members"]]
    with urllib.request.urlopen(f"http://{address}:8080/", timeout=5) as resp:
        return str(resp.read().decode())


def everything_written(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_secret_variable_reaches_the_service_and_nothing_else(infra: Infra, tmp_path: Path) -> None:
    path = tmp_path / "stack.py"
    S = str(path)
    path.write_text(STACK % SECRET)
    outputs = [infra.run("validate", S, check=True), infra.run("plan", S, "--out", str(tmp_path / "saved.plan")),
               infra.run("plan", S, "--json"), infra.run("apply", S, "--yes", check=True),
               infra.run("status", S), infra.run("status", S, "--json"),
               infra.run("graph", S), infra.run("image", "build", S)]
    assert served(infra, S) == SECRET  # verbatim: quotes, $(...) and a backslash mean nothing
    assert not Path("/tmp/pwned").exists()
    for out in outputs:
        assert SECRET not in out.stdout + out.stderr and "s3cr3t" not in out.stdout + out.stderr

    holders = [p for p, data in everything_written(tmp_path).items() if b"s3cr3t" in data]
    # The stack file, and the member's user-data as LinuxKit keeps it (config/userdata) and expands
    # it (the secret file): both private to the member.
    assert sorted(p.name for p in holders) == ["API_TOKEN", "stack.py", "userdata"], holders
    (secret_file,) = [p for p in holders if p.name == "API_TOKEN"]
    assert secret_file.parts[-3:] == ("api", "secret-env", "API_TOKEN")
    for held in holders:
        if held != path:
            assert stat.S_IMODE(held.stat().st_mode) == 0o600
    documents = [p for p in tmp_path.rglob("*.yml")]
    assert documents and all("API_TOKEN" in p.read_text() and "s3cr3t" not in p.read_text() for p in documents)

    # A new value changes nothing by itself (it is not in the spec); --replace delivers it.
    path.write_text(STACK % NEW_SECRET)
    assert infra.run("plan", S, "--detailed-exitcode").returncode == 0
    assert served(infra, S) == SECRET
    (member,) = [s["member"] for s in infra.json("status", S)["groups"][0]["members"]]
    infra.run("apply", S, "--yes", "--replace", f"api/{member}", check=True)
    assert served(infra, S) == NEW_SECRET


def test_a_bad_secret_variable_name_is_an_error_at_its_line(infra: Infra, tmp_path: Path) -> None:
    path = tmp_path / "stack.py"
    S = str(path)
    path.write_text(STACK.replace('{"API_TOKEN": %r}', '{"API TOKEN;reboot": "x"}'))
    out = infra.run("validate", S)
    assert out.returncode == 1 and "stack.py:" in out.stderr and "not a valid environment variable name" in out.stderr
    assert "Traceback" not in out.stderr
