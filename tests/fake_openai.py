"""A loopback HTTP server that speaks just enough of the OpenAI API to misbehave on purpose.

It stands in for a vLLM server that refuses, fails, stalls or cuts a stream, which a
real engine does not do on demand. It records every request it gets. The happy path
of the remote backend is tested against the app's own endpoint, a real engine.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    """``mode`` picks the next answers: "stream", "slow", "silent", "stall", "cut", "no-finish",
    "error-event", "reject-stream-options", or an int HTTP status (with ``message``)."""

    def __init__(self, models: tuple[str, ...] = ("tiny-random",)):
        self.models = list(models)
        self.mode: Any = "stream"
        self.message = "something went wrong"
        self.models_status = 200
        self.words = ["red", "green", "blue"]
        self.requests: list[dict[str, Any]] = []
        self.session_ids: list[str | None] = []
        self.disconnected = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/") != "/v1/models":
                    return self._json(404, {"error": {"message": "not found"}})
                if server.models_status != 200:
                    return self._json(server.models_status, {"error": {"message": "Invalid API key"}})
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake", "max_model_len": 2048}
                    for m in server.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                server.requests.append(body)
                server.session_ids.append(self.headers.get("x-session-id"))
                mode = server.mode
                if isinstance(mode, int):
                    if mode == 400:  # vLLM's flat error body
                        return self._json(400, {"object": "error", "message": server.message,
                                                "type": "BadRequestError", "param": None, "code": 400})
                    return self._json(mode, {"error": {"message": server.message, "type": "error", "code": mode}})
                if mode == "stall":
                    time.sleep(3)
                    return self._json(500, {"error": {"message": "too late"}})
                if mode == "reject-stream-options" and "stream_options" in body:
                    return self._json(400, {"object": "error", "message": "Unknown parameter: stream_options"})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self._event({"role": "assistant", "content": ""})
                if mode == "silent":  # says nothing more; notices when the client hangs up
                    self.connection.settimeout(10)
                    try:
                        if self.connection.recv(1) == b"":
                            server.disconnected.set()
                    except OSError:
                        server.disconnected.set()
                    return
                words = server.words * (200 if mode == "slow" else 1)
                try:
                    for word in words:
                        self._event({"content": word + " "})
                        if mode == "slow":
                            time.sleep(0.05)
                except OSError:
                    server.disconnected.set()
                    return
                if mode == "cut":  # the server dies mid-answer: no final chunk, the connection drops
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if mode == "error-event":
                    self._chunk(b'data: {"error": {"message": "engine crashed", "code": 500}}\n\n')
                elif mode != "no-finish":
                    self._event({}, finish="stop")
                    self._chunk(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", '
                                b'"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 3, '
                                b'"total_tokens": 45}}\n\n')
                    self._chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _json(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _event(self, delta: dict[str, Any], finish: str | None = None) -> None:
                data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
