"""The daemon's live page, in a real headless browser (Debian's chromium): the members, their
health, and a health change after a member is killed and healed, read from the rendered DOM and
seen in screenshots (the health colours' pixels, counted with Pillow)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from reconciler.views.graph import FILL
from tests.daemon.conftest import Harness, is_pass
from tests.polling import wait_for

pytestmark = pytest.mark.e2e


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: scripts/install.sh installs it (apt-get install chromium)"
    return found


def browser(*args: str, tmp: Path) -> str:
    """Run headless chromium (root in a private network namespace: no sandbox) and return stdout."""
    proc = subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=1000",
                           *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(tmp)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rows(dom: str) -> dict[str, str]:
    """member → health, as the browser rendered the members' rows."""
    return dict(re.findall(r"data-member=\"([\w-]+)\" data-health=\"(\w+)\"", dom))


def colour_pixels(shot: Path) -> dict[str, int]:
    """How many pixels of the screenshot have each health colour (the page's and the graph's)."""
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
    wanted = {tuple(int(FILL[h][i:i + 2], 16) for i in (1, 3, 5)): h for h in ("healthy", "unhealthy")}
    counts = {"healthy": 0, "unhealthy": 0}
    for count, rgb in colours:
        if rgb in wanted:
            counts[wanted[rgb]] += count
    return counts


def test_the_page_shows_members_and_a_kill_and_its_heal(harness: Harness, tmp_path: Path) -> None:
    stack = harness.stack_file("live", size=2, slow_start=5.0)  # a replacement takes seconds to be ready
    d = harness.daemon(stack, interval=1)
    d.wait_for(is_pass("ok", observed=2), timeout=120, what="the stack converged")
    url = d.metrics_url + "/"

    dom = browser("--dump-dom", url, tmp=tmp_path)
    assert "<title>infra daemon</title>" in dom and "pending plan: no changes" in dom
    assert rows(dom) == {"web-0": "healthy", "web-1": "healthy"}, dom[:3000]
    assert "<svg" in dom and "live at local" in dom  # the graph, drawn from the same data
    shot = tmp_path / "page.png"

    def screenshot() -> dict[str, int]:
        browser(f"--screenshot={shot}", "--window-size=1200,900", url, tmp=tmp_path)
        return colour_pixels(shot)

    before = screenshot()
    assert before["healthy"] > 1000 and before["unhealthy"] == 0, before  # green cells and nodes, no red

    victim = harness.status(stack)["groups"][0]["members"][1]
    os.kill(harness.service_pid(victim["name"], "web"), signal.SIGKILL)

    def sick() -> tuple[str, dict[str, int]] | None:
        page = browser("--dump-dom", url, tmp=tmp_path)
        if rows(page).get("web-1") != "unhealthy":
            return None
        seen = screenshot()  # the replacement is slow to start: web-1 stays unhealthy for seconds
        return (page, seen) if seen["unhealthy"] > 100 else None

    during, seen = wait_for(sick, "the page to show web-1 unhealthy, in the DOM and on screen", timeout=60, every=0.2)
    assert "pending plan" in during and rows(during)["web-0"] == "healthy" and seen["healthy"] > 100

    def healed() -> str | None:
        page = browser("--dump-dom", url, tmp=tmp_path)
        return page if rows(page) == {"web-0": "healthy", "web-1": "healthy"} and "no changes" in page else None

    after = wait_for(healed, "the page to show web-1 healthy again", timeout=90, every=0.5)
    assert re.search(r"<td>applied</td>", after), "the pass that replaced web-1 is in the list of last passes"
    healed_shot = screenshot()
    assert healed_shot["unhealthy"] == 0 and healed_shot["healthy"] >= before["healthy"] // 2, healed_shot
    assert d.terminate() == 0
