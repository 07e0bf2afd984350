"""Property tests of the surfaces that take outside input.

* A value with quotes, newlines, ``$(...)`` or backticks never changes the meaning of the boot
  wrapper a LinuxKit service runs: run by a real ``/bin/sh``, it exports exactly that value.
* The image document survives YAML and the member's user-data survives JSON unchanged, whatever
  the strings in them.
* The stack loader, given random settings, either builds a Stack or raises ConfigError naming the
  stack file's line: never another exception, never a traceback.
* The GCE emulator's filter parser, given any text, gives a predicate or a FilterError (400).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.gcp.emulator.filters import FilterError, compile_filter
from reconciler.core import linuxkit
from reconciler.core.errors import ConfigError
from reconciler.core.model import ConfigFile, MemberSpec, Service
from reconciler.engine.loader import load_stack

#: Text a shell would love to interpret: quotes, substitutions, globs, newlines, unicode.
nasty = st.text(alphabet=st.sampled_from(list("ab $`'\"\\\n;|&*?(){}[]<>#~=!%é")), max_size=40)


@settings(max_examples=150, deadline=None)
@given(value=nasty, plain=nasty)
def test_env_values_reach_the_service_verbatim_through_the_boot_wrapper(value: str, plain: str) -> None:
    # "{address}" makes the value late-bound: it goes through the wrapper's `export` line
    svc = Service(name="probe", image="busybox", command=("printenv", "LATE"),
                  env={"LATE": value + "{address}", "PLAIN": plain})
    doc = linuxkit.document([svc], metadata="gcp")
    (entry,) = doc["services"]
    argv = entry["command"]
    assert argv[:2] == ["/bin/sh", "-c"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == value + "0.0.0.0\n"  # the boot value read at boot (none here: 0.0.0.0)
    assert f"PLAIN={plain}" in entry["env"]  # a value without a boot placeholder stays plain data


@settings(max_examples=150, deadline=None)
@given(value=nasty, content=nasty)
def test_the_document_survives_yaml_and_user_data_survives_json(value: str, content: str) -> None:
    svc = Service(name="svc", image="busybox", command=("run", value), env={"K": value})
    doc = linuxkit.document([svc], metadata="aws")
    assert yaml.safe_load(linuxkit.dump(doc)) == doc
    member = MemberSpec(stack="s", group="g", member="g-0", role="command", services=(svc,),
                        files=(ConfigFile(path="g/conf", content=content),))
    data = json.loads(json.dumps(member.userdata()))
    assert data["g"]["entries"]["conf"]["content"] == content


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=25), size=st.one_of(st.integers(-3, 12000), st.text(max_size=4)),
       labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
       setting=st.sampled_from(["protect", "machine_type", "image", "sise"]), value=nasty)
def test_the_loader_gives_a_stack_or_a_clear_error(tmp_path: Path, name: str, size: object,
                                                    labels: dict[str, str], setting: str, value: str) -> None:
    path = tmp_path / "fuzz.py"
    path.write_text("from reconciler import Group, Stack\n"
                    f"stack = Stack(name={name!r}, groups=[Group(name='web', size={size!r}, labels={labels!r}, "
                    f"{setting}={value!r})])\n")
    try:
        load_stack(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}:") and "Traceback" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_the_emulators_filter_parser_never_fails_otherwise(text: str) -> None:
    try:
        predicate = compile_filter(text)
    except FilterError:
        return
    predicate({"name": "x", "labels": {"a": "b"}, "status": "RUNNING"})
