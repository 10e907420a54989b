"""Two app processes on one --data-dir: neither deletes an image file the other still uses.

Instance A (default --session-ttl: housekeeping once a minute) gets two images and a
question; then instance B starts on the same folder with --session-ttl 2, so it sweeps
the shared image store every second. After several of B's passes every image file of A
must still be there, and A must still list, serve and answer about its images. Each keeps
a lease on the store, and a clean exit withdraws it: B's on SIGTERM (``docker stop``, a Space
restarting), A's on SIGINT although A was started with SIGINT ignored, as a shell script's
``python app.py &`` starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[2]
STARTUP_LIMIT = 240  # seconds; importing torch and gradio on a busy 2-core machine is slow
PASS_LINE = "housekeeping pass:"

pytestmark = pytest.mark.slow


class AppProcess:
    """``python app.py --model tiny-random`` on a free port and a given data folder, in a subprocess."""

    def __init__(self, name: str, data_dir: Path, logs: Path, *extra: str, log_level: str = "INFO",
                 sigint_ignored: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = logs / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_APP_") or k == "LLAVA_APP_CACHE"}
        env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
                   LLAVA_APP_LOG_LEVEL=log_level, PYTHONFAULTHANDLER="1")  # SIGABRT: every thread's stack
        self.signals = ""
        # trap "" INT: the app inherits SIGINT as ignored, as from a non-interactive shell's background job
        shell = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"] if sigint_ignored else []
        cmd = [*shell, sys.executable, "app.py", "--model", "tiny-random", "--device", "cpu",
               "--port", str(self.port), "--data-dir", str(data_dir), "--max-new-tokens", "8", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> AppProcess:
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log.name}: the app exited:\n{self.text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "config", timeout=2).status_code == 200:
                    return self
            time.sleep(0.25)
        raise RuntimeError(f"{self.log.name}: the app did not start in {STARTUP_LIMIT} s:\n{self.text()[-3000:]}")

    def wait_for_log(self, needle: str, count: int, limit: float) -> int:
        """Wait until ``needle`` has appeared ``count`` times in the log; returns how often it did."""
        deadline = time.monotonic() + limit
        while (seen := self.text().count(needle)) < count and time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.log.name}: the app exited:\n{self.text()[-3000:]}"
            time.sleep(0.2)
        return seen

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait 30 s for the exit; past that, SIGABRT (the log gets every thread's stack)
        and SIGKILL. Returns the exit code (-6 or -9: it did not exit on ``sig``)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):  # its signal masks, for a report should it not exit
                self.signals = " ".join(line.replace("\t", "") for line in
                                        Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
                                        if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        return self.proc.returncode

    def exit_report(self, code: int) -> str:
        """What to say when it did not exit cleanly: its code, its signal masks, the end of its log (with
        the threads' stacks after a SIGABRT)."""
        text = self.text()
        start = text.rfind("Fatal Python error")
        return f"code {code} (-6/-9: no exit in 30 s); {self.signals}\n{text[start:] if start >= 0 else text[-3000:]}"


def _image_path(data_dir: Path, sha: str) -> Path:
    return data_dir / "images" / sha[:2] / f"{sha}.png"


def test_a_second_instance_keeps_every_image_of_the_first(tmp_path, tiny_cache, image_files):
    data = tmp_path / "shared"
    a = AppProcess("a", data, tmp_path, sigint_ignored=True)
    b = None
    try:
        a.wait_ready()
        client = Client(a.url, verbose=False)
        first = client.predict("Compare Image 1 and Image 2", [handle_file(str(p)) for p in image_files[:2]],
                               api_name="/chat")
        assert first.strip()
        shas = [im["sha256"] for im in client.predict(api_name="/context")["images"]]
        assert len(shas) == 2 and all(_image_path(data, s).exists() for s in shas)

        b = AppProcess("b", data, tmp_path, "--session-ttl", "2", log_level="DEBUG").wait_ready()
        passes = b.wait_for_log(PASS_LINE, count=4, limit=60)
        assert passes >= 4, f"B ran {passes} housekeeping passes in 60 s:\n{b.text()[-3000:]}"

        removed = [line for line in b.text().splitlines() if "removed" in line and "image file" in line
                   and PASS_LINE not in line]
        missing = [s[:12] for s in shas if not _image_path(data, s).exists()]
        assert not missing, f"after {passes} passes of B, A's image files {missing} are gone; B logged {removed}"
        ctx = client.predict(api_name="/context")
        assert [im["sha256"] for im in ctx["images"]] == shas
        follow_up = client.predict("Which one is brighter?", [], api_name="/chat")
        assert follow_up.strip(), "A did not answer a follow-up about its images"
        for sha in shas:  # whole on disk; served to the page only through its conversation's folder, never here
            assert _image_path(data, sha).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"A's image {sha[:12]} is damaged"
            r = httpx.get(f"{a.url}gradio_api/file={_image_path(data, sha)}", timeout=10)
            assert r.status_code == 403, f"the store's file {sha[:12]} is served (HTTP {r.status_code})"
        assert b.proc.poll() is None and a.proc.poll() is None
        leases = {json.loads(p.read_text())["pid"]: p for p in (data / "images" / "instances").glob("*.json")}
        assert {a.proc.pid, b.proc.pid} <= set(leases), "an instance keeps no lease on the shared store"
        code = b.stop(signal.SIGTERM)
        assert code == 0 and not leases[b.proc.pid].exists(), f"B's exit on SIGTERM: {b.exit_report(code)}"
        code = a.stop(signal.SIGINT)
        assert code == 0 and not leases[a.proc.pid].exists(), f"A's exit on SIGINT: {a.exit_report(code)}"
    finally:
        if b is not None:
            b.stop()
        a.stop()
