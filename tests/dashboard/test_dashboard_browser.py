"""End to end in a real browser: ``deeppcos dashboard RUN`` served on a free loopback port,
opened in headless Chromium (Playwright driving Debian's ``/usr/bin/chromium``); the Patient page
must render its explanation, and a screenshot is saved in the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DEEPPCOS_CHROMIUM", "/usr/bin/chromium")
START_S = 90  # the server imports streamlit; the first Patient page loads TensorFlow too
RENDER_MS = 150_000


def _browser_or_skip() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install -y chromium; "
            ".ci/run does) or set DEEPPCOS_CHROMIUM to its path"
        )
    pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not answer within {START_S} s:\n{log.read_text()}")


@pytest.fixture
def served(dashboard_run: Path, tmp_path: Path) -> Iterator[str]:
    """The dashboard on ``dashboard_run``, started through the CLI; stopped afterwards."""
    _browser_or_skip()
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "deeppcos.cli", "dashboard", str(dashboard_run),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the CLI and the streamlit process it started
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_patient_page_renders_in_chromium(served: str, tmp_path: Path) -> None:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(served)  # warm-up: the Cohort page
        page.get_by_text("Image gallery").wait_for(timeout=RENDER_MS)
        page.goto(f"{served}/patient")
        page.get_by_text("Rotterdam criteria from the data present").wait_for(timeout=RENDER_MS)
        page.get_by_text("Download the HTML report").wait_for(timeout=RENDER_MS)
        body = page.inner_text("body")
        screenshot = tmp_path / "patient.png"
        page.screenshot(path=str(screenshot))
        browser.close()
    assert "Patient SYN-" in body and "Calibrated risk" in body
    assert "Grad-CAM on the ultrasound images" in body
    assert "false negative" in body or "false positive" in body or "true positive" in body
    assert "Traceback" not in body
    assert screenshot.stat().st_size > 20_000
