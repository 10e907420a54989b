"""A server killed mid-answer (SIGKILL) and started again: the page shows the half answer as interrupted.

A real ``app.py`` process streams slowly (``--stream-delay``); once the page shows part of
the answer, the process is killed with SIGKILL and the app starts again on the same port and
data folder, in the test's process: it has only what the killed one left in the folder
(localStorage belongs to the origin, so the browser's key still applies). The page reloads
itself once the server answers again (Gradio's frontend, having lost its connection, polls
every 2 s and reloads: the test waits for that reload rather than racing it with one of its
own), shows the half answer with the interrupted mark, and Regenerate writes a whole answer
in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, launched_app, wait_page_loaded, watch_gradio
from hardening import wait_until

from llava_app.config import Config

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


def saved_answer(data: Path) -> str:
    """The answer of the last turn as the server has saved it so far (its SQLite store; empty before any)."""
    db = data / "history" / "conversations.sqlite3"
    if not db.exists():
        return ""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
        rows = con.execute("SELECT data FROM conversations").fetchall()
    turns = [t for (raw,) in rows for t in json.loads(raw).get("turns") or []]
    return (turns[-1].get("assistant") or "") if turns else ""


def test_an_answer_cut_off_by_sigkill_comes_back_marked_interrupted(browser, tmp_path, tiny_cache):
    port, data = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}/"
    first = start_app(port, data, tmp_path / "first.log")
    second = contextlib.ExitStack()
    try:
        context = browser.new_context()
        page = context.new_page()
        watch_gradio(page)  # for this load and the page's own reload
        page.goto(url)
        page.wait_for_selector("#question textarea", timeout=60_000)
        wait_page_loaded(page)  # the conversation is bound to the browser's key, so it is saved as it grows
        page.fill("#question textarea", "Tell me a long story")
        page.press("#question textarea", "Enter")
        # Words have streamed for a while, and the server has saved some of them (the first text, then every
        # 2 s): the kill comes once the page shows at least the first three saved words.
        page.wait_for_function("() => ([...document.querySelectorAll('#chatbot .message-row.bot-row')].pop()"
                               "?.innerText || '').split(/\\s+/).length > 12", timeout=120_000)
        assert wait_until(lambda: len(saved_answer(data).split()) >= 3, timeout=60, step=0.1) is not None
        first_saved = " ".join(saved_answer(data).split()[:3])
        page.wait_for_function("(words) => ([...document.querySelectorAll('#chatbot .message-row.bot-row')].pop()"
                               "?.innerText || '').split(/\\s+/).join(' ').includes(words)", arg=first_saved,
                               timeout=60_000)
        shown = answer_text(page)
        # The page lost its server mid-answer: it reloads itself when the new one answers.
        with page.expect_navigation(timeout=(STARTUP_LIMIT + 60) * 1000):
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            second.enter_context(launched_app(Config(model="tiny-random", device="cpu", data_dir=str(data),
                                                     max_new_tokens=400, stream_delay=0.05), port=port))
        page.wait_for_selector("#question textarea", timeout=60_000)
        page.wait_for_function("() => (document.querySelector('#chatbot')?.innerText || '').includes('interrupted')",
                               timeout=60_000)
        restored = answer_text(page)
        assert "interrupted" in restored
        # The saved half answer is a part of what the page had shown (saved at most a few seconds earlier).
        words = restored.split("(interrupted")[0].split()
        assert len(words) >= 3 and " ".join(words[:3]) in " ".join(shown.split())
        assert "Tell me a long story" in page.inner_text("#chatbot")
        wait_page_loaded(page)
        page.click("#regenerate")
        page.wait_for_function("() => !(document.querySelector('#chatbot')?.innerText || '').includes('interrupted')",
                               timeout=60_000)
        page.click("#stop")
        context.close()
    finally:
        second.close()
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            try:
                first.wait(30)
            except subprocess.TimeoutExpired:
                first.kill()
