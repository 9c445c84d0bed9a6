"""`make screenshots`: the README's pictures, taken from a real run of `retrain demo`.

1. `retrain demo` (this checkout's code) runs in a scratch home on the default ports, which
   must be free: the pictures come from its own server, never from one already running. When
   its first loop waits for approval, headless Chromium photographs that loop's page in the
   Temporal Web UI, on the User Metadata tab (its Current Details: candidate, guardrails, the
   commands to approve), then the script approves it with `retrain approve`, as a reviewer
   would.
2. When the demo has finished, Chromium photographs the top of the drift report it wrote (the
   check on live traffic: the labels moved, the inputs did not).

Chromium is Debian's (`/usr/bin/chromium`, started with the flags a closed network needs),
driven by Playwright's Python package; images are downscaled and palette-quantised with Pillow
so they stay small. Grafana is not photographed: no Grafana server can be installed from the
registries this project uses (see docs/operations.md); the dashboard JSON is checked by
tests/ops/test_compose.py instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect, Page

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
PORTS = (7233, 8233)  # the demo's dev server and Web UI
UI = f"http://127.0.0.1:{PORTS[1]}"
MODEL = "demo-credit"
WAITING = "Waiting for approval"  # workflows/loop/details.py, while the loop waits
WIDTH = 1280
# A runaway layout must not make a giant picture.
MAX_HEIGHT = 6000
# The page's height with every visible scrolling container unrolled (hidden menus scroll too).
UNROLLED_HEIGHT = """() => {
  const heights = Array.from(document.querySelectorAll("*"), (e) => {
    const style = getComputedStyle(e);
    const scrolls = ["auto", "scroll"].includes(style.overflowY);
    const visible = style.visibility === "visible" && e.getClientRects().length > 0;
    return scrolls && visible ? e.getBoundingClientRect().top + e.scrollHeight : 0;
  });
  return Math.max(document.documentElement.scrollHeight, ...heights);
}"""
# Brings the page to what the picture shows and returns the region to keep.
Show = Callable[["Page"], "FloatRect"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("chromium not found: `make screenshots` installs Debian's package (apt-get)")
    return found


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def photograph(url: str, target: Path, show: Show) -> None:
    """Open `url`, let `show` bring the page to what the picture is about and return the region
    to keep, then save that region downscaled to 900px wide and quantised to 128 colours."""
    # Imported here: `make screenshots` installs Playwright's Python package on demand (it
    # drives Debian's Chromium; it never downloads a browser).
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as directory, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(url, wait_until="load", timeout=120_000)
        region = show(page)
        raw = Path(directory) / "shot.png"
        page.screenshot(path=str(raw), clip=region)
        browser.close()
        image = Image.open(raw).convert("RGB")
    scale = 900 / image.width
    image = image.resize((900, round(image.height * scale)), Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")


def unroll(page: Page) -> None:
    """Make the viewport as tall as the content: the Web UI scrolls inside its own container,
    which a full-page screenshot does not unroll."""
    height = page.evaluate(UNROLLED_HEIGHT)
    page.set_viewport_size({"width": WIDTH, "height": min(int(height) + 1, MAX_HEIGHT)})
    page.wait_for_timeout(1000)


def loop_details(page: Page) -> FloatRect:
    """The loop's page on its User Metadata tab, where the Web UI (2.54) shows Current
    Details: markdown rendered in an iframe of its own, queried from the worker when the tab
    opens. The page is reloaded until the details say the loop waits for approval."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    details = page.frame_locator("#user-metadata-current-details")
    for _ in range(8):
        page.get_by_role("tab", name="User Metadata").click(timeout=60_000)
        try:
            details.get_by_text(WAITING).first.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.reload(wait_until="load", timeout=120_000)
    else:
        raise SystemExit(f"the loop's Current Details never said {WAITING!r}: {page.url}")
    # The iframe sizes itself to its markdown once rendered.
    page.wait_for_timeout(1500)
    unroll(page)
    box = page.locator("main").bounding_box()
    if box is None:
        raise SystemExit(f"no <main> on {page.url}")
    return box


def drift_report(page: Page) -> FloatRect:
    """The report's top: the verdict, the columns table and the first (drifted) column's
    distributions; the other columns' charts below it look alike."""
    unroll(page)
    box = page.locator("section.column").first.bounding_box()
    if box is None:
        raise SystemExit(f"no column section in {page.url}")
    return {"x": 0, "y": 0, "width": WIDTH, "height": box["y"] + box["height"] + 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", action="store_true", help="keep the demo's scratch home")
    args = parser.parse_args()
    busy = [port for port in PORTS if port_open(port)]
    if busy:
        sys.exit(f"port(s) {busy} already in use: stop the server there (`retrain server`?) first")
    OUT.mkdir(parents=True, exist_ok=True)
    retrain = str(Path(sys.executable).parent / "retrain")
    home = Path(tempfile.mkdtemp(prefix="retrain-screenshots-"))
    # This checkout's code, whichever environment's `retrain` runs it.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "RETRAIN_HOME": str(home), "COLUMNS": "160", "PYTHONPATH": path}
    env.pop("TEMPORAL_ADDRESS", None)
    demo = subprocess.Popen(
        [retrain, "demo", "--no-bad-candidate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group: the demo's dev server and endpoint end with it.
        start_new_session=True,
    )
    assert demo.stdout is not None
    approve = re.compile(rf"retrain approve {MODEL} --loop (\d+) --reviewer")
    # The demo prints each waiting loop's details (which name the approve command) and then the
    # command again: each loop is handled once. The first is photographed; every one is
    # approved, or the demo would wait for a reviewer forever.
    reviewed: list[str] = []
    try:
        deadline = time.monotonic() + 900
        for line in demo.stdout:
            print(line, end="")
            match = approve.search(line)
            if match and match.group(1) not in reviewed:
                number = match.group(1)
                if not reviewed:
                    photograph(
                        f"{UI}/namespaces/default/workflows/retrain-{MODEL}-{number}",
                        OUT / "web-ui-loop-waiting-for-approval.png",
                        loop_details,
                    )
                reviewed.append(number)
                subprocess.run(
                    [
                        retrain,
                        "approve",
                        MODEL,
                        "--loop",
                        number,
                        "--reviewer",
                        "ana",
                        "--comment",
                        "screenshots taken",
                    ],
                    env=env,
                    check=True,
                )
            if time.monotonic() > deadline:
                raise SystemExit("the demo took more than 15 minutes")
        if demo.wait() != 0:
            raise SystemExit(f"retrain demo exited {demo.returncode}")
        reports = sorted((home / "drift" / MODEL / "reports").glob("*.html"))
        if not reports:
            raise SystemExit("the demo wrote no drift report")
        photograph(reports[-1].as_uri(), OUT / "drift-report.png", drift_report)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
