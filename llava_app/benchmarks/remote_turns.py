"""The web process's CPU per turn in remote mode, six photos in the conversation.

    python -m llava_app.benchmarks.remote_turns                  # six 2048x1536 photos, 6 turns; ~20 s
    python -m llava_app.benchmarks.remote_turns --pictures 6 --turns 4 --out remote_turns.json

Each turn sends the whole conversation, every picture a PNG data URL, to an OpenAI-compatible server
(a sink in another process that reads the request and answers three words), through the app's
``OpenAIBackend``. Measured: this process's CPU time per turn (``time.process_time``: every thread),
three ways, alternating turn by turn:

- ``encoded``: every picture's data URL made again each turn and the openai client encoding the body
  (the app before, once a conversation's pictures outgrew its 64 MB least-recently-used cache, which
  then missed every picture on every turn);
- ``kept``: the data URLs kept, the openai client encoding the body (the app before, within the cache);
- ``prebuilt``: the data URLs kept as JSON bytes and put into the body as they are (the app now).

Prints a table and writes a JSON report.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llava_app.benchmarks.common import write_json

#: the sink: an OpenAI-compatible server that reads each request whole and answers three words
SINK = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        raw = json.dumps({"object": "list", "data": [{"id": "sink", "object": "model", "created": 0,
                                                      "owned_by": "sink", "max_model_len": 65536}]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw))); self.end_headers(); self.wfile.write(raw)
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        if self.path != "/v1/chat/completions":
            self.send_response(404); self.send_header("content-length", "0"); self.end_headers(); return
        events = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in "a b c".split()]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = b"".join(b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                                "model": "sink", **e}).encode() + b"\n\n" for e in events)
        body += b"data: [DONE]\n\n"
        self.send_response(200); self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.remote_turns",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=6, help="photos in the conversation")
    parser.add_argument("--size", default="2048x1536", help="each photo's size (2048 is the stored maximum)")
    parser.add_argument("--turns", type=int, default=6, help="turns measured each way")
    parser.add_argument("--out", default="artifacts/bench_remote_turns.json", help="where to write the JSON results")
    return parser.parse_args(argv)


def photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Photo-like pictures (smooth light and grain: PNG does not shrink them much), stored as uploads are."""
    import numpy as np
    from PIL import Image

    from llava_app.storage.images import ImageStore, load_image_file

    store, paths = ImageStore(folder / "images"), []
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    for i in range(count):
        rng = np.random.default_rng(i)
        light = np.stack([(x * 255 // w + 40 * i) % 256, y * 255 // h, (x + y) * 255 // (w + h)], -1)
        pixels = (light + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        raw = folder / f"photo{i}.png"
        Image.fromarray(pixels).save(raw)
        paths.append(store.put(load_image_file(raw)))
    return paths


def run(args: argparse.Namespace) -> dict:
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import ChatRequest, GenerationParams
    from llava_app.engine.remote import OpenAIBackend

    size = tuple(int(v) for v in args.size.split("x"))
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            stored = photos(Path(tmp), args.pictures, size)  # type: ignore[arg-type]
            conv = Conversation()
            for s in stored:
                conv.add_image(s.sha256, s.path, s.width, s.height)
            backend = OpenAIBackend("sink", f"http://127.0.0.1:{port}/v1")
            cpu: dict[str, list[float]] = {"encoded": [], "kept": [], "prebuilt": []}
            for turn in range(args.turns + 1):
                conv.ask(f"Question {turn} about the photos?")
                for way in cpu:
                    if way == "encoded":
                        backend.data_urls.clear()
                    backend.prebuilt_body = way == "prebuilt"
                    request = ChatRequest(conv.messages(), GenerationParams(max_new_tokens=8))
                    started = time.process_time()
                    answer = "".join(getattr(e, "text", "") for e in backend.stream(request))
                    if turn:  # the first turn encodes every picture either way
                        cpu[way].append(time.process_time() - started)
                conv.answer(answer)
            mb = sum(Path(s.path).stat().st_size for s in stored) / 2**20
    finally:
        sink.terminate()
        sink.wait()
    result = {"pictures": args.pictures, "size": args.size, "png_mb": round(mb, 1), "turns": args.turns,
              "cpu_s_per_turn": {way: [round(v, 4) for v in values] for way, values in cpu.items()},
              "median_s": {way: round(statistics.median(values), 4) for way, values in cpu.items()}}
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"{result['pictures']} pictures of {result['size']} ({result['png_mb']} MB of PNG), turns 2-{args.turns + 1}")
    print("| way | CPU per turn, median | turns |")
    print("|---|---|---|")
    for way, values in result["cpu_s_per_turn"].items():
        print(f"| {way} | {result['median_s'][way]:.3f} s | {', '.join(f'{v:.3f}' for v in values)} |")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
