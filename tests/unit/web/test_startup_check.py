"""Gradio's start-up check waits for a server that is slow to answer its first request (gradio_compat)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llava_app.web import gradio_compat
from llava_app.web.gradio_compat import patient_startup_check, url_answers


@pytest.fixture
def server():
    """A loopback server answering HEAD with ``statuses`` in turn, the first answer ``first_delay`` s late."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(time.monotonic())
            if len(seen) == 1:
                time.sleep(httpd.first_delay)
            status = httpd.statuses[min(len(seen), len(httpd.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.first_delay, httpd.statuses, httpd.seen = 0.0, [200], seen
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def test_a_first_answer_slower_than_a_try_is_waited_for(server):
    server.first_delay = 1.0  # Gradio's own check gives up here (at its 3 s, scaled down)
    assert url_answers(url(server), deadline_s=20, try_s=0.3) is True
    assert len(server.seen) >= 2


def test_a_login_page_counts_as_up_and_wrong_answers_fail_after_five(server):
    server.statuses = [401]
    assert url_answers(url(server), deadline_s=20, try_s=2) is True
    server.seen.clear()
    server.statuses = [404]
    assert url_answers(url(server), deadline_s=20, try_s=2) is False
    assert len(server.seen) == 5


def test_a_refused_connection_fails_at_once():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert url_answers(f"http://127.0.0.1:{port}/", deadline_s=20, try_s=2) is False
    assert time.monotonic() - started < 5


def test_the_app_gives_gradio_the_patient_check(monkeypatch):
    from gradio import networking

    monkeypatch.setattr(networking, "url_ok", networking.url_ok)  # put back after the test
    patient_startup_check()
    assert networking.url_ok is gradio_compat.url_answers
