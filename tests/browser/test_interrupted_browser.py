"""A server killed mid-answer (SIGKILL) and started again: the page shows the half answer as interrupted.

A real ``app.py`` process streams slowly (``--stream-delay``); once the page shows part of
the answer, the process is killed with SIGKILL and a new one starts on the same port and
data folder (localStorage belongs to the origin, so the browser's key still applies). The
reloaded page shows the half answer with the interrupted mark, and Regenerate writes a
whole answer in its place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_LIMIT = 240  # seconds; importing torch and gradio on a busy 2-core machine is slow

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def start_app(port: int, data_dir: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_APP_") or k == "LLAVA_APP_CACHE"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "app.py", "--model", "tiny-random", "--device", "cpu", "--port", str(port),
           "--data-dir", str(data_dir), "--max-new-tokens", "400", "--stream-delay", "0.05"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                return proc
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"the app did not start in {STARTUP_LIMIT} s:\n{log.read_text(errors='replace')[-3000:]}")


def answer_text(page) -> str:
    bots = page.locator("#chatbot .message-row.bot-row")
    return bots.last.inner_text() if bots.count() else ""


def test_an_answer_cut_off_by_sigkill_comes_back_marked_interrupted(browser, tmp_path, tiny_cache):
    port, data = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}/"
    first = start_app(port, data, tmp_path / "first.log")
    second = None
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#question textarea", timeout=60_000)
        page.fill("#question textarea", "Tell me a long story")
        page.press("#question textarea", "Enter")
        # Words have streamed for a while (past the first partial save and one more).
        page.wait_for_function("() => ([...document.querySelectorAll('#chatbot .message-row.bot-row')].pop()"
                               "?.innerText || '').split(/\\s+/).length > 12", timeout=120_000)
        time.sleep(2.5)
        shown = answer_text(page)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        second = start_app(port, data, tmp_path / "second.log")
        page.reload()
        page.wait_for_selector("#question textarea", timeout=60_000)
        page.wait_for_function("() => (document.querySelector('#chatbot')?.innerText || '').includes('interrupted')",
                               timeout=60_000)
        restored = answer_text(page)
        assert "interrupted" in restored
        # The saved half answer is a part of what the page had shown (saved at most a few seconds earlier).
        words = restored.split("(interrupted")[0].split()
        assert len(words) >= 3 and " ".join(words[:3]) in " ".join(shown.split())
        assert "Tell me a long story" in page.inner_text("#chatbot")
        gone = "() => !(document.querySelector('#chatbot')?.innerText || '').includes('interrupted')"
        for attempt in range(2):  # a click that lands while the restarted page still settles is clicked again
            page.click("#regenerate")
            try:
                page.wait_for_function(gone, timeout=30_000)
                break
            except Exception:  # noqa: BLE001 - playwright's TimeoutError
                if attempt:
                    raise
        page.click("#stop")
        context.close()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
