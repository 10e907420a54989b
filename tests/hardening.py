"""Helpers for the hardening tests: a raw browser-like client, thread and CPU probes."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import psutil

GENERATION_THREADS = ("llava-generate", "llava-stream")


def generation_threads() -> list[str]:
    """Names of the threads that exist only while an answer is being generated."""
    return sorted(t.name for t in threading.enumerate() if t.name in GENERATION_THREADS and t.is_alive())


def wait_until(predicate, timeout: float, step: float = 0.02) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def cpu_seconds() -> float:
    """CPU time this process has used (all threads), in seconds."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def cpu_rate(window: float) -> float:
    """This process's CPU use over the next ``window`` seconds, in cores."""
    before, start = cpu_seconds(), time.monotonic()
    time.sleep(window)
    return (cpu_seconds() - before) / (time.monotonic() - start)


class TabClient:
    """What a browser tab does for one event: join the queue, read the event stream, maybe hang up.

    ``close()`` drops the connection the way a closed tab does (no /cancel request).
    """

    def __init__(self, url: str, api_name: str, data: list, session_hash: str | None = None):
        self.url = url
        config = httpx.get(url + "config").json()
        dep = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
        self.session_hash = session_hash or uuid.uuid4().hex[:11]
        body = {"data": data, "fn_index": dep["id"], "session_hash": self.session_hash, "event_data": None,
                "trigger_id": None}
        joined = httpx.post(url + "gradio_api/queue/join", json=body, timeout=30)
        joined.raise_for_status()
        self._client = httpx.Client(timeout=60)
        self._stream = self._client.stream("GET", url + f"gradio_api/queue/data?session_hash={self.session_hash}")
        self._response = self._stream.__enter__()
        self._lines = self._response.iter_lines()

    def messages(self):
        """Server-sent messages as dicts, as they arrive."""
        for line in self._lines:
            if line.startswith("data:"):
                yield json.loads(line[5:])

    def wait_generating(self, n: int = 3) -> list[dict]:
        """Read until ``n`` streamed updates arrived."""
        got = []
        for msg in self.messages():
            if msg.get("msg") == "process_generating":
                got.append(msg)
                if len(got) >= n:
                    return got
            if msg.get("msg") in ("process_completed", "close_stream"):
                break
        raise AssertionError(f"the answer did not stream (last message: {got[-1:] or msg})")

    def close(self) -> None:
        """Hang up, as a closed tab does."""
        self._stream.__exit__(None, None, None)
        self._client.close()
