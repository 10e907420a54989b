"""Multi-turn speed benchmark: the usual rebuild-everything chat loop against this app's engine.

Run ``python -m llava_app.benchmarks.multiturn`` (about five minutes on a 2-core CPU). In one run, on the
same random-weight model with LLaVA-1.5 token geometry (``tiny-random-bench``: 576 tokens
per image), it plays the same chat twice:

* ``naive``: a chat class that keeps the history and, every turn, calls
  ``apply_chat_template`` and the processor on all of it with all the images, then
  ``generate`` (what the common multi-turn LLaVA recipes do);
* ``ours``: the app's ``ChatService`` and ``LocalBackend`` (prefix KV reuse, feature cache).

Workload: 4 images in the first turn, 6 turns, 64 new tokens each, greedy; then a turn
after Undo and a turn after the session's KV was evicted by the budget (feature cache
only). Per turn: time to first token, total time, tokens prefilled, vision-tower calls,
peak resident memory. Each side runs in its own process so memory peaks do not mix.
Then the app's end-to-end streaming rate through ``gradio_client`` against raw
``generate`` on the tiny model. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    "Describe each image : what is in Image 1 , Image 2 , Image 3 and Image 4 ?",
    "Which image has the most red ?",
    "Compare Image 1 and Image 3 .",
    "What is in the background of Image 2 ?",
    "Is there text in any of the images ?",
    "Which two images are most similar ?",
]
UNDO_QUESTION = "Which image is the brightest ?"
EVICTED_QUESTION = "Count the shapes in Image 4 ."
SYSTEM_PROMPT = "You are a helpful assistant that answers questions about the user's images."

TARGETS = {"ttft_ratio_turn6": 8.0, "stream_rate_ratio": 0.9}


# ----- measuring ----------------------------------------------------------------------------------
class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in MiB over the ``with`` block."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


class VisionCalls:
    """Counts forward calls of the model's vision tower (and the images or tiles it saw)."""

    def __init__(self, model):
        self.calls = 0
        self.inputs = 0
        model.model.vision_tower.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.inputs += int(args[0].shape[0]) if args else 0


def bench_images(folder: Path, n: int = 4) -> list[Path]:
    """``n`` deterministic photo-sized pictures (gradients, shapes and noise), saved as PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = [(640, 480), (480, 640), (800, 600), (512, 512)][i % 4]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1)) % 256, (y * (i + 2)) % 256, ((x + y) * (3 - i % 3)) % 256], -1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
        img = Image.fromarray(noisy)
        draw = ImageDraw.Draw(img)
        for k in range(3 + i):
            x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
            draw.ellipse([x0, y0, x0 + 70, y0 + 70], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        p = folder / f"photo{i + 1}.png"
        img.save(p)
        paths.append(p)
    return paths


def as_the_app_stores_it(path: Path, processor):
    """The picture as the app keeps an upload (decoded, downscaled to what the model's processor
    uses), so that both sides of a comparison give the model the same pixels."""
    from llava_app.storage.images import ImageLimits, ModelImageSize, load_image_file

    return load_image_file(path, ImageLimits(model_size=ModelImageSize.from_processor(processor.image_processor)))


# ----- the usual way --------------------------------------------------------------------------------
class NaiveChat:
    """The common multi-turn recipe: keep the history, re-template and re-process everything each turn."""

    def __init__(self, model, processor, system_prompt: str = ""):
        self.model, self.processor = model, processor
        self.history: list[dict[str, Any]] = []
        self.images: list[Any] = []
        self._brought: list[list[tuple[str, Any]]] = []  # per user turn: the (label, image) pairs it added
        self._pending: list[tuple[str, Any]] = []  # images of an undone turn go with the next question
        if system_prompt:
            self.history.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})

    def ask(self, question: str, images=(), labels=(), max_new_tokens: int = 64) -> dict[str, Any]:
        """One turn; returns the answer, its token ids and timings."""
        import torch
        from transformers.generation.streamers import BaseStreamer

        started = time.perf_counter()
        content: list[dict[str, Any]] = []
        brought = self._pending + list(zip(labels, images))
        self._pending = []
        for label, img in brought:
            content += [{"type": "text", "text": f"{label}:"}, {"type": "image"}]
            self.images.append(img)
        self._brought.append(brought)
        content.append({"type": "text", "text": question})
        self.history.append({"role": "user", "content": content})
        text = self.processor.apply_chat_template(self.history, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=text, images=self.images or None, return_tensors="pt")
        first: list[float] = []

        class FirstToken(BaseStreamer):
            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if self.prompt_seen and not first:
                    first.append(time.perf_counter())
                self.prompt_seen = True

            def end(self):
                pass

        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=FirstToken())
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        answer = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        self.history.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return {"answer": answer, "new_token_ids": new, "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "ttft": first[0] - started, "total": time.perf_counter() - started}

    def undo(self) -> None:
        """Drop the last exchange; the images it brought wait for the next question."""
        del self.history[-2:]
        self._pending = self._brought.pop()
        if self._pending:
            del self.images[-len(self._pending):]


# ----- the two sides: one worker process each, driven turn by turn --------------------------------
def _turn_record(name: str, result: dict[str, Any], vision: VisionCalls, calls0: int, inputs0: int,
                 peak: PeakRSS, **extra) -> dict[str, Any]:
    return {"turn": name, "ttft_s": result["ttft"], "total_s": result["total"],
            "prompt_tokens": result["prompt_tokens"], "prefilled_tokens": result["prefilled_tokens"],
            "vision_calls": vision.calls - calls0, "vision_inputs": vision.inputs - inputs0,
            "peak_rss_mib": round(peak.peak, 1), "new_token_ids": result["new_token_ids"], **extra}


class NaiveSide:
    """The rebuild-everything loop."""

    def __init__(self, args, image_paths: list[Path]):
        from llava_app.engine.models import LoadOptions, load_model_and_processor

        model, processor, _ = load_model_and_processor(args.model, LoadOptions(device="cpu"))
        self.pictures = [as_the_app_stores_it(p, processor) for p in image_paths]
        self.vision = VisionCalls(model)
        self.chat = NaiveChat(model, processor, SYSTEM_PROMPT)
        self.new_tokens = args.new_tokens

    def turn(self, name: str, question: str, with_images: bool) -> dict[str, Any]:
        imgs = self.pictures if with_images else []
        labels = [f"Image {k + 1}" for k in range(len(imgs))]
        c0, n0 = self.vision.calls, self.vision.inputs
        with PeakRSS() as peak:
            r = self.chat.ask(question, imgs, labels, self.new_tokens)
        r["prefilled_tokens"] = r["prompt_tokens"]
        return _turn_record(name, r, self.vision, c0, n0, peak)

    def undo(self) -> dict[str, Any]:
        self.chat.undo()
        return {}

    def evict(self) -> dict[str, Any]:
        return {}  # nothing is kept between turns anyway


class OursSide:
    """The app's service and engine, driven as the page drives them."""

    def __init__(self, args, image_paths: list[Path]):
        from llava_app.engine.base import GenerationParams
        from llava_app.engine.local import LocalBackend
        from llava_app.chat.conversation import Conversation
        from llava_app.storage.images import ImageStore
        from llava_app.chat.service import ChatService

        store = ImageStore(Path(args.work) / "ours-images")
        self.backend = LocalBackend(args.model, store, device="cpu", kv_cache_bytes=int(args.kv_cache_mb * 2**20))
        self.service = ChatService(self.backend, store, max_images=8)
        self.vision = VisionCalls(self.backend.model)
        self.params = GenerationParams(temperature=0.0, max_new_tokens=args.new_tokens)
        self.conv = Conversation()
        self.image_paths = image_paths

    def turn(self, name: str, question: str, with_images: bool) -> dict[str, Any]:
        if with_images:
            result = self.service.add_images(self.conv, [(str(p), p.name) for p in self.image_paths])
            assert not result.errors, result.errors
        c0, n0 = self.vision.calls, self.vision.inputs
        with PeakRSS() as peak:
            started = time.perf_counter()
            self.service.ask(self.conv, question)
            for _ in self.service.stream_answer(self.conv, self.params, SYSTEM_PROMPT):
                pass
            total = time.perf_counter() - started
        s, reuse = self.backend.last_run, self.backend.reuse
        r = {"ttft": s.first_token_at - started, "total": total, "prompt_tokens": s.prompt_tokens,
             "prefilled_tokens": s.prefilled_tokens, "new_token_ids": s.new_token_ids}
        return _turn_record(name, r, self.vision, c0, n0, peak, reused_tokens=s.reused_tokens,
                            feature_cache_hits=s.image_feature_hits,
                            kv_cache_mib=round(reuse.kv.nbytes / 2**20, 1),
                            feature_cache_mib=round(reuse.features.nbytes / 2**20, 1))

    def undo(self) -> dict[str, Any]:
        self.service.undo(self.conv)
        return {}

    def evict(self) -> dict[str, Any]:
        """Memory pressure: the budget shrinks to this session's size and another user asks about
        a picture, so the least recently used session (ours) is evicted."""
        from llava_app.engine.base import GenerationParams
        from llava_app.chat.conversation import Conversation

        kv = self.backend.reuse.kv
        kv.budget = int(kv.nbytes * 1.05)
        other = Conversation()
        self.service.add_images(other, [(str(self.image_paths[0]), self.image_paths[0].name)])
        self.service.ask(other, "What is this ?")
        for _ in self.service.stream_answer(other, GenerationParams(max_new_tokens=8), SYSTEM_PROMPT):
            pass
        return {"evicted": self.conv.id not in kv, "budget_mib": round(kv.budget / 2**20, 1)}


def serve_side(args, image_paths: list[Path]) -> None:
    """A worker: builds one side, then runs the commands read from stdin (one JSON per line)."""
    side = (NaiveSide if args.phase == "naive" else OursSide)(args, image_paths)
    out = sys.stdout
    sys.stdout = sys.stderr  # only results go to the pipe
    print(_RESULT + json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            return
        if cmd["op"] == "turn":
            result = side.turn(cmd["name"], cmd["question"], cmd.get("images", False))
        else:
            result = getattr(side, cmd["op"])()
        print(_RESULT + json.dumps(result), file=out, flush=True)


_RESULT = "@@result "


class _Worker:
    """The parent's handle on a side's worker process."""

    def __init__(self, args, name: str):
        cmd = [sys.executable, "-m", "llava_app.benchmarks.multiturn", "--phase", name, "--work", args.work,
               "--model", args.model, "--new-tokens", str(args.new_tokens), "--kv-cache-mb", str(args.kv_cache_mb),
               "--threads", str(args.threads)]
        self.name = name
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.read()

    def read(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(_RESULT):
                return json.loads(line[len(_RESULT):])
        raise RuntimeError(f"the {self.name} worker stopped (exit {self.proc.wait()})")

    def send(self, **cmd) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def run_chat(args) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides play the same chat; each step runs on one side, then on the other, so the two
    see the same machine load (the CPU is shared), each in its own process (own memory peak)."""
    plan = [("turn", str(i), q, i == 1) for i, q in enumerate(QUESTIONS[: args.turns], start=1)]
    plan += [("undo", "", "", False), ("turn", "after undo", UNDO_QUESTION, False),
             ("evict", "", "", False), ("turn", "after eviction", EVICTED_QUESTION, False)]
    sides = {name: _Worker(args, name) for name in ("naive", "ours")}
    results: dict[str, dict[str, Any]] = {name: {"turns": []} for name in sides}
    try:
        for op, name, question, images in plan:
            for side, worker in sides.items():
                if op == "turn":
                    rec = worker.send(op="turn", name=name, question=question, images=images)
                    results[side]["turns"].append(rec)
                    print(f"  {side:5} {name:>14}: ttft {rec['ttft_s']:6.2f} s  total {rec['total_s']:6.2f} s  "
                          f"prefilled {rec['prefilled_tokens']}", file=sys.stderr, flush=True)
                else:
                    results[side].update(worker.send(op=op))
    finally:
        for worker in sides.values():
            worker.close()
    return results["naive"], results["ours"]


# ----- streaming through the app ---------------------------------------------------------------------
def run_stream(args, image_paths: list[Path]) -> dict[str, Any]:
    """Tokens per second through gradio_client (the /chat API) against raw ``generate``, same model and prompt.

    The app runs as its own server process (``app.py``), as it is deployed; the client and
    the raw recipe (open the image, processor, ``generate`` with a ``TextIteratorStreamer``)
    run here, one at a time, alternating. Two rates each: the streaming rate (tokens after
    the first chunk, over the time from the first chunk to the last) and the end-to-end
    rate (all tokens over the time from the request to the last chunk).
    """
    import contextlib
    import socket

    from gradio_client import Client, handle_file
    from transformers import TextIteratorStreamer

    from llava_app.engine.local import LocalBackend
    from llava_app.config import Config
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import ImageStore

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = args.stream_tokens
    data_dir = Path(args.work) / "app"
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "app.py"), "--model", args.stream_model,
         "--device", "cpu", "--port", str(port), "--data-dir", str(data_dir), "--max-new-tokens", str(n),
         "--max-new-tokens-limit", str(max(n, 2048)), "--temperature", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": str(args.stream_threads)} if args.stream_threads else None)
    url = f"http://127.0.0.1:{port}/"
    system_prompt = Config().system_prompt  # the app's default, used by /chat
    backend = LocalBackend(args.stream_model, ImageStore(Path(args.work) / "raw-images"), device="cpu")
    tokenizer = backend.processor.tokenizer
    question = "Tell a long story about Image 1 ."
    picture = image_paths[0]
    ref = backend.images.put(as_the_app_stores_it(picture, backend.processor))
    conv = Conversation()
    conv.add_image(ref.sha256, ref.path, ref.width, ref.height)
    conv.ask(question)
    messages = conv.messages(system_prompt)  # the prompt /chat builds: the image labelled "Image 1"

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def raw() -> dict[str, Any]:
        cpu, started = time.process_time(), time.perf_counter()
        image = as_the_app_stores_it(picture, backend.processor)
        text = backend.processor.apply_chat_template(
            [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
             for m in messages], add_generation_prompt=True, tokenize=False)
        inputs = backend.processor(text=text, images=[image], return_tensors="pt")
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(
            backend.model.generate(**inputs, max_new_tokens=n, do_sample=False, streamer=streamer)))
        t.start()
        first, first_text, answer = None, "", ""
        for chunk in streamer:
            if chunk and first is None:
                first, first_text = time.perf_counter(), chunk
            answer += chunk
        t.join()
        done = time.perf_counter()
        return {"started": started, "first": first, "done": done, "first_text": first_text, "text": answer,
                "tokens": int(out[0].shape[1] - inputs["input_ids"].shape[1]), "cpu": time.process_time() - cpu}

    def server_cpu() -> float:
        """CPU seconds the server process has used (all its threads)."""
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def app() -> dict[str, Any]:
        client = Client(url, verbose=False)
        cpu, started = server_cpu(), time.perf_counter()
        job = client.submit(question, [handle_file(str(picture))], api_name="/chat")
        first, first_text, updates = None, "", 0
        for update in job:
            updates += 1
            text = update if isinstance(update, str) else update[0]
            if first is None and text:
                first, first_text = time.perf_counter(), text
        final = job.result()
        done = time.perf_counter()
        used = server_cpu() - cpu
        client.close()
        return {"started": started, "first": first, "done": done, "first_text": first_text, "text": final,
                "updates": updates, "cpu": used}

    def rates(r: dict[str, Any], tokens: int) -> tuple[float, float]:
        streamed = tokens - n_tokens(r["first_text"])
        return streamed / (r["done"] - r["first"]), tokens / (r["done"] - r["started"])

    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                Client(url, verbose=False).close()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the app server did not start")
                time.sleep(0.5)
        raw(), app()  # warm both paths up (first-call costs are not streaming)
        runs = []
        for _ in range(args.stream_repeats):
            r, a = raw(), app()
            ntok = r["tokens"]
            (r_stream, r_e2e), (a_stream, a_e2e) = rates(r, ntok), rates(a, ntok)
            runs.append({"tokens": ntok, "raw_stream_tok_s": r_stream, "raw_e2e_tok_s": r_e2e,
                         "app_stream_tok_s": a_stream, "app_e2e_tok_s": a_e2e, "app_updates": a["updates"],
                         "raw_first_chunk_s": r["first"] - r["started"], "app_first_chunk_s": a["first"] - a["started"],
                         "raw_cpu_s": r["cpu"], "app_server_cpu_s": a["cpu"],
                         "same_text": a["text"].strip() == r["text"].strip()})
            print(f"  stream: raw {r_stream:.0f} tok/s, app {a_stream:.0f} tok/s; end to end raw {r_e2e:.0f}, "
                  f"app {a_e2e:.0f} ({a['updates']} updates)", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ntok = runs[0]["tokens"]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    # Raw and app runs alternate; each pair's ratio is taken, then the median (the machine's
    # load drifts between pairs far more than within one).
    return {
        "model": args.stream_model, "tokens": ntok, "runs": runs,
        "raw_tok_s": med("raw_stream_tok_s"), "app_tok_s": med("app_stream_tok_s"),
        "rate_ratio": statistics.median(r["app_stream_tok_s"] / r["raw_stream_tok_s"] for r in runs),
        "raw_e2e_tok_s": med("raw_e2e_tok_s"), "app_e2e_tok_s": med("app_e2e_tok_s"),
        "e2e_rate_ratio": statistics.median(r["app_e2e_tok_s"] / r["raw_e2e_tok_s"] for r in runs),
        "raw_first_chunk_s": med("raw_first_chunk_s"), "app_first_chunk_s": med("app_first_chunk_s"),
        # CPU per token is what the page's machinery adds, whatever else the machine is doing.
        "raw_cpu_ms_per_token": 1000 * med("raw_cpu_s") / ntok,
        "app_server_cpu_ms_per_token": 1000 * med("app_server_cpu_s") / ntok,
        "updates_per_answer": med("app_updates"),
        "same_text": all(r["same_text"] for r in runs),
    }


# ----- the report -------------------------------------------------------------------------------------
def summarise(naive: dict, ours: dict, stream: dict | None, args) -> dict[str, Any]:
    """Side-by-side rows, ratios and the targets."""
    rows = []
    targets: dict[str, dict[str, Any]] = {}
    for a, b in zip((naive or {}).get("turns", []), (ours or {}).get("turns", [])):
        rows.append({
            "turn": a["turn"], "naive_ttft_s": a["ttft_s"], "ours_ttft_s": b["ttft_s"],
            "ttft_ratio": a["ttft_s"] / b["ttft_s"], "naive_total_s": a["total_s"], "ours_total_s": b["total_s"],
            "naive_prefilled": a["prefilled_tokens"], "ours_prefilled": b["prefilled_tokens"],
            "naive_vision_calls": a["vision_calls"], "ours_vision_calls": b["vision_calls"],
            "naive_vision_images": a["vision_inputs"], "ours_vision_images": b["vision_inputs"],
            "naive_peak_rss_mib": a["peak_rss_mib"], "ours_peak_rss_mib": b["peak_rss_mib"],
            "ours_kv_cache_mib": b["kv_cache_mib"], "same_tokens": a["new_token_ids"] == b["new_token_ids"],
        })
    if rows:
        by_turn = {r["turn"]: r for r in rows}
        evicted = by_turn.get("after eviction", {})
        targets.update({
            f"ttft_ratio_turn{args.turns}": {"value": by_turn[str(args.turns)]["ttft_ratio"],
                                             "target": TARGETS["ttft_ratio_turn6"]},
            "identical_greedy_tokens": {"value": all(r["same_tokens"] for r in rows), "target": True},
            "no_vision_call_after_eviction": {"value": ours["evicted"] and evicted.get("ours_vision_calls") == 0,
                                              "target": True},
        })
    if stream:
        targets["stream_rate_ratio"] = {"value": stream["rate_ratio"], "target": TARGETS["stream_rate_ratio"]}
    for t in targets.values():
        t["met"] = t["value"] >= t["target"] if isinstance(t["target"], float) else t["value"] is t["target"]
    return {"model": args.model, "turns": args.turns, "images": 4, "new_tokens": args.new_tokens,
            "threads": args.threads or _torch_threads(), "stream_threads": args.stream_threads or _torch_threads(),
            "rows": rows, "stream": stream, "targets": targets,
            "naive": naive, "ours": ours}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def table(report: dict[str, Any]) -> str:
    """A Markdown table of the rows, then the streaming line and the targets."""
    head = ("| turn | TTFT naive (s) | TTFT ours (s) | naive/ours | total naive (s) | total ours (s) "
            "| prefilled naive | prefilled ours | vision calls (images) naive | vision calls (images) ours "
            "| peak RSS naive (MiB) | peak RSS ours (MiB) | KV held ours (MiB) | same tokens |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)] if report["rows"] else []
    for r in report["rows"]:
        lines.append(
            f"| {r['turn']} | {r['naive_ttft_s']:.2f} | {r['ours_ttft_s']:.3f} | {r['ttft_ratio']:.1f}x "
            f"| {r['naive_total_s']:.2f} | {r['ours_total_s']:.2f} | {r['naive_prefilled']} | {r['ours_prefilled']} "
            f"| {r['naive_vision_calls']} ({r['naive_vision_images']}) | {r['ours_vision_calls']} "
            f"({r['ours_vision_images']}) | {r['naive_peak_rss_mib']:.0f} "
            f"| {r['ours_peak_rss_mib']:.0f} | {r['ours_kv_cache_mib']:.0f} | {'yes' if r['same_tokens'] else 'NO'} |")
    s = report.get("stream")
    if s:
        lines.append("")
        lines.append(
            f"Streaming ({s['model']}, {s['tokens']} tokens, {report['stream_threads']} thread(s), median of "
            f"{len(s['runs'])} alternating pairs): raw generate {s['raw_tok_s']:.0f} tok/s, the app through "
            f"gradio_client {s['app_tok_s']:.0f} tok/s, ratio {s['rate_ratio']:.2f}. End to end (request to last "
            f"token): raw {s['raw_e2e_tok_s']:.0f} tok/s, app {s['app_e2e_tok_s']:.0f} tok/s, ratio "
            f"{s['e2e_rate_ratio']:.2f}; first chunk after {s['raw_first_chunk_s']:.2f} s raw, "
            f"{s['app_first_chunk_s']:.2f} s app. CPU per token: raw {s['raw_cpu_ms_per_token']:.2f} ms, app server "
            f"{s['app_server_cpu_ms_per_token']:.2f} ms ({s['updates_per_answer']:.0f} updates per answer). "
            f"Same text: {'yes' if s['same_text'] else 'NO'}.")
    lines.append("")
    for name, t in report["targets"].items():
        value = f"{t['value']:.2f}" if isinstance(t["value"], float) else str(t["value"])
        lines.append(f"- {name}: {value} (target {t['target']}) {'met' if t['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.multiturn", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-random-bench", help="model for the multi-turn comparison")
    p.add_argument("--turns", type=int, default=6, help="turns before Undo (at most %d)" % len(QUESTIONS))
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per answer (greedy)")
    p.add_argument("--kv-cache-mb", type=float, default=2048.0, help="ours: KV budget before the eviction turn")
    p.add_argument("--stream-model", default="tiny-random", help="model for the streaming-rate comparison")
    p.add_argument("--stream-tokens", type=int, default=1000, help="answer length for the streaming comparison")
    p.add_argument("--stream-repeats", type=int, default=7, help="runs of the streaming comparison (median)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the multi-turn comparison, same on both sides (0: torch's default; one "
                   "by default because OpenMP threads spinning on a shared, loaded CPU make timings erratic)")
    p.add_argument("--stream-threads", type=int, default=1,
                   help="torch threads for the streaming comparison, raw and app alike (0: torch's default)")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming comparison")
    p.add_argument("--stream-only", action="store_true", help="run only the streaming comparison")
    p.add_argument("--out", default="artifacts/bench_multiturn.json", help="JSON report")
    p.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    p.add_argument("--phase", choices=["naive", "ours", "stream"], help=argparse.SUPPRESS)  # internal: a worker
    p.add_argument("--phase-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _phase(args, name: str) -> dict[str, Any]:
    """Run a phase in a fresh process and read its result."""
    out = Path(args.work) / f"{name}.json"
    cmd = [sys.executable, "-m", "llava_app.benchmarks.multiturn", "--phase", name, "--phase-out", str(out), "--work", args.work,
           "--model", args.model, "--turns", str(args.turns), "--new-tokens", str(args.new_tokens),
           "--kv-cache-mb", str(args.kv_cache_mb), "--stream-model", args.stream_model,
           "--stream-tokens", str(args.stream_tokens), "--stream-repeats", str(args.stream_repeats),
           "--threads", str(args.threads), "--stream-threads", str(args.stream_threads)]
    print(f"{name} ...", file=sys.stderr, flush=True)
    threads = args.stream_threads if name == "stream" else args.threads
    # The thread count is set the same way as for the app's server (it reads OMP_NUM_THREADS).
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None)
    return json.loads(out.read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.turns > len(QUESTIONS):
        raise SystemExit(f"--turns is at most {len(QUESTIONS)}")
    if args.phase:
        threads = args.stream_threads if args.phase == "stream" else args.threads
        if threads:
            import torch

            torch.set_num_threads(threads)
        images = sorted((Path(args.work) / "pictures").glob("photo*.png"))
        if args.phase == "stream":
            Path(args.phase_out).write_text(json.dumps(run_stream(args, images)))
        else:
            serve_side(args, images)
        return 0
    with tempfile.TemporaryDirectory(prefix="llava-bench-") as tmp:
        args.work = args.work or tmp
        from llava_app.engine.tiny import build_tiny_model, is_tiny

        for name in {args.model, args.stream_model}:
            if is_tiny(name):
                build_tiny_model(name)  # built once, outside the timed phases
        bench_images(Path(args.work) / "pictures")
        started = time.perf_counter()
        naive, ours = (None, None) if args.stream_only else run_chat(args)
        stream = None if args.no_stream else _phase(args, "stream")
    report = summarise(naive, ours, stream, args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"\nJSON: {out}  ({report['wall_s']} s)")
    return 0 if all(t["met"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
