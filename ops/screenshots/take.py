"""`make screenshots`: the README's pictures, taken from a real run of `retrain demo`.

1. `retrain demo` runs in a scratch home on the default ports; when its first loop waits for
   approval, headless Chromium photographs that loop's page in the Temporal Web UI (its
   Current Details: candidate, guardrails, the commands to approve), then the script approves
   it with `retrain approve`, as a reviewer would.
2. When the demo has finished, Chromium photographs the drift report it wrote (the check on
   live traffic: the labels moved, the inputs did not).

Chromium is Debian's (`/usr/bin/chromium`, started with the flags a closed network needs),
driven by Playwright's Python package; images are downscaled and palette-quantised with Pillow
so they stay small. Grafana is not
photographed: no Grafana server can be installed from the registries this project uses (see
docs/operations.md); the dashboard JSON is checked by tests/ops/test_compose.py instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

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
UI = "http://127.0.0.1:8233"
MODEL = "demo-credit"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("chromium not found: `make screenshots` installs Debian's package (apt-get)")
    return found


def shoot(url: str, target: Path, width: int, wait_for: str | None = None) -> None:
    """A full-page screenshot of `url` once `wait_for` (a text) shows and the page is idle,
    downscaled to 900px wide and quantised to 128 colours."""
    # Imported here: `make screenshots` installs Playwright's Python package on demand (it
    # drives Debian's Chromium; it never downloads a browser).
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as directory, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url, wait_until="load", timeout=120_000)
        if wait_for is not None:
            page.get_by_text(wait_for).first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        raw = Path(directory) / "shot.png"
        page.screenshot(path=str(raw), full_page=True)
        browser.close()
        image = Image.open(raw).convert("RGB")
    scale = 900 / image.width
    image = image.resize((900, round(image.height * scale)), Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", action="store_true", help="keep the demo's scratch home")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    retrain = str(Path(sys.executable).parent / "retrain")
    home = Path(tempfile.mkdtemp(prefix="retrain-screenshots-"))
    env = {**os.environ, "RETRAIN_HOME": str(home), "COLUMNS": "160"}
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
    try:
        deadline = time.monotonic() + 900
        for line in demo.stdout:
            print(line, end="")
            match = approve.search(line)
            if match:
                loop_id = f"retrain-{MODEL}-{match.group(1)}"
                time.sleep(3)  # the Web UI's visibility catches up with the loop's stage
                shoot(
                    f"{UI}/namespaces/default/workflows/{loop_id}",
                    OUT / "web-ui-loop-waiting-for-approval.png",
                    1280,
                    wait_for="Waiting for approval",
                )
                subprocess.run(
                    [
                        retrain,
                        "approve",
                        MODEL,
                        "--loop",
                        match.group(1),
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
        shoot(reports[-1].as_uri(), OUT / "drift-report.png", 1280)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
