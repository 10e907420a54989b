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
    "error-event", "reject-stream-options", or an int HTTP status (with ``message``).

    Its own token count (``count``): a token per word, ``image_tokens`` per picture, 5 per message; it
    reports it in the usage, counts text with vLLM's ``/tokenize`` when ``tokenize`` is on, and refuses
    prompts over ``refuse_over`` tokens as llama.cpp does."""

    def __init__(self, models: tuple[str, ...] = ("tiny-random",)):
        self.models = list(models)
        self.mode: Any = "stream"
        self.message = "something went wrong"
        self.models_status = 200
        self.window = 32768  # the max_model_len it reports, as vLLM does
        #: refuse prompts longer than this many tokens as llama.cpp does (HTTP 400 with its count); None: never
        self.refuse_over: int | None = None
        self.tokenize = False  # serve vLLM's /tokenize (counts by ``count``)
        self.info: dict[str, Any] | None = None  # serve TGI's /info with these fields
        self.image_tokens = 100  # what a picture costs in ``count``
        self.finish = "stop"  # the finish_reason of a complete answer
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
                if server.info is not None and self.path == "/info":
                    return self._json(200, server.info)
                if self.path.rstrip("/") != "/v1/models":
                    return self._json(404, {"error": {"message": "not found"}})
                if server.models_status != 200:
                    return self._json(server.models_status, {"error": {"message": "Invalid API key"}})
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake", "max_model_len": server.window}
                    for m in server.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if server.tokenize and self.path == "/tokenize":
                    return self._json(200, {"count": server.count(body), "max_model_len": server.window})
                if self.path.rstrip("/") != "/v1/chat/completions":  # vLLM's /tokenize, llama.cpp's: not here
                    return self._json(404, {"error": {"message": "not found"}})
                server.requests.append(body)
                if server.refuse_over is not None and server.count(body) > server.refuse_over:
                    return self._json(400, {"error": {
                        "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": server.count(body),
                        "n_ctx": server.refuse_over, "message": "the request exceeds the available context size, "
                                                               "try increasing it"}})
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
                    self._event({}, finish=server.finish)
                    prompt = server.count(body) if server.tokenize or server.refuse_over else 42
                    usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + 3}
                    self._chunk(b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                                        "model": "m", "choices": [], "usage": usage}).encode()
                                + b"\n\n")
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

    def count(self, body: dict[str, Any]) -> int:
        """The fake model's token count of a request's messages."""
        total = 0
        for m in body.get("messages", []):
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            total += 5 + sum(len(p["text"].split()) if p["type"] == "text" else self.image_tokens for p in parts)
        return total

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
