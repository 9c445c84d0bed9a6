"""`make screenshots`: the README's pictures, taken from a real run of `retrain demo`.

1. `retrain demo` runs in a scratch home on the default ports; when its first loop waits for
   approval, headless Chromium photographs that loop's page in the Temporal Web UI (its
   Current Details: candidate, guardrails, the commands to approve), then the script approves
   it with `retrain approve`, as a reviewer would.
2. When the demo has finished, Chromium photographs the drift report it wrote (the check on
   live traffic: the labels moved, the inputs did not).

Chromium is Debian's (`/usr/bin/chromium`, started with the flags a closed network needs);
images are downscaled and palette-quantised with Pillow so they stay small. Grafana is not
photographed: no Grafana server can be installed from the registries this project uses (see
docs/operations.md); the dashboard JSON is checked by tests/ops/test_compose.py instead.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
UI = "http://127.0.0.1:8233"
MODEL = "demo-credit"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("chromium not found: `make screenshots` installs Debian's package (apt-get)")
    return found


def shoot(url: str, target: Path, width: int, height: int, wait_ms: int) -> None:
    """A full-window screenshot of `url` after `wait_ms` of (virtual) time, downscaled to
    900px wide and quantised to 128 colours."""
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}/data",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={raw}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
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
                    1500,
                    20_000,
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
        shoot(reports[-1].as_uri(), OUT / "drift-report.png", 1280, 2200, 2_000)
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
