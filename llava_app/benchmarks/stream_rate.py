"""Streaming rate: tokens per second through ``gradio_client`` (the /chat API) against raw ``generate``.

The app runs as its own server process (``app.py``), as it is deployed; the client and the raw
recipe (open the image, processor, ``generate`` with a ``TextIteratorStreamer``) run here, one at
a time, alternating, on the same model and prompt. Two rates each: the streaming rate (tokens
after the first chunk, over the time from the first chunk to the last) and the end-to-end rate
(all tokens over the time from the request to the last chunk).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import (
    REPO,
    as_the_app_stores_it,
    free_port,
    launched_app,
    process_cpu_seconds,
    threads_env,
)

QUESTION = "Tell a long story about Image 1 ."


class RawRecipe:
    """The usual streaming recipe on the same model, prompt and picture as the app's /chat."""

    def __init__(self, args, picture: Path):
        from llava_app.chat.conversation import Conversation
        from llava_app.config import Config
        from llava_app.engine.local.backend import LocalBackend
        from llava_app.storage.images import ImageStore

        self.backend = LocalBackend(args.stream_model, ImageStore(Path(args.work) / "raw-images"), device="cpu")
        self.tokenizer = self.backend.processor.tokenizer
        self.picture, self.max_new_tokens = picture, args.stream_tokens
        ref = self.backend.images.put(as_the_app_stores_it(picture, self.backend.processor))
        conv = Conversation()
        conv.add_image(ref.sha256, ref.path, ref.width, ref.height)
        conv.ask(QUESTION)
        # The prompt /chat builds, with the app's default system prompt: the image labelled "Image 1".
        self.messages = conv.messages(Config().system_prompt)

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def run(self) -> dict[str, Any]:
        """One answer, streamed; timings, text, token count and this process's CPU time."""
        from transformers import TextIteratorStreamer

        backend = self.backend
        cpu, started = time.process_time(), time.perf_counter()
        image = as_the_app_stores_it(self.picture, backend.processor)
        text = backend.processor.apply_chat_template(
            [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
             for m in self.messages], add_generation_prompt=True, tokenize=False)
        inputs = backend.processor(text=text, images=[image], return_tensors="pt")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(backend.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=streamer)))
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


class AppProcess:
    """``app.py`` serving the stream model greedily on a free loopback port, as deployed."""

    def __init__(self, args):
        n, port = args.stream_tokens, free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--model", args.stream_model, "--device", "cpu",
             "--port", str(port), "--data-dir", str(Path(args.work) / "app"), "--max-new-tokens", str(n),
             "--max-new-tokens-limit", str(max(n, 2048)), "--temperature", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=threads_env(args.stream_threads))
        self.url = f"http://127.0.0.1:{port}/"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU seconds the server process has used (all its threads)."""
        return process_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class ServedHere:
    """The app served from this process (a smoke test): its CPU time includes the client's."""

    def __init__(self, url: str):
        self.url = url

    def alive(self) -> bool:
        return True

    def cpu_seconds(self) -> float:
        return time.process_time()

    def close(self) -> None:
        pass


@contextlib.contextmanager
def served_here(args) -> Iterator[ServedHere]:
    """The app with ``AppProcess``'s settings, launched in this process."""
    from llava_app.config import Config

    n = args.stream_tokens
    config = Config(model=args.stream_model, device="cpu", data_dir=str(Path(args.work) / "app"), max_new_tokens=n,
                    max_new_tokens_limit=max(n, 2048), temperature=0.0)
    with launched_app(config) as (url, _app, _demo):
        yield ServedHere(url)


def wait_for(server, timeout: float = 180) -> None:
    """Return once the server answers a client; raise if it died or did not within ``timeout``."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            Client(server.url, verbose=False).close()
            return
        except Exception as exc:  # noqa: BLE001 - not up yet
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start") from exc
            time.sleep(0.5)


def through_the_app(server, picture: Path) -> dict[str, Any]:
    """One answer from /chat through ``gradio_client``; timings, text, updates and the server's CPU time."""
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    cpu, started = server.cpu_seconds(), time.perf_counter()
    job = client.submit(QUESTION, [handle_file(str(picture))], api_name="/chat")
    first, first_text, updates = None, "", 0
    for update in job:
        updates += 1
        text = update if isinstance(update, str) else update[0]
        if first is None and text:
            first, first_text = time.perf_counter(), text
    final = job.result()
    done = time.perf_counter()
    used = server.cpu_seconds() - cpu
    client.close()
    return {"started": started, "first": first, "done": done, "first_text": first_text, "text": final,
            "updates": updates, "cpu": used}


def pair(raw: RawRecipe, server, picture: Path, bare) -> dict[str, Any]:
    """One raw run, one app run, one call of a bare Gradio endpoint (``bare``: its client); side by side."""
    from llava_app.benchmarks.ttft import first_chunk

    r, a = raw.run(), through_the_app(server, picture)
    b0, b1, _ = first_chunk(bare, "/stream", "a bare answer")
    ntok = r["tokens"]

    def rates(run: dict[str, Any]) -> tuple[float, float]:
        streamed = ntok - raw.n_tokens(run["first_text"])
        return streamed / (run["done"] - run["first"]), ntok / (run["done"] - run["started"])

    (r_stream, r_e2e), (a_stream, a_e2e) = rates(r), rates(a)
    print(f"  stream: raw {r_stream:.0f} tok/s, app {a_stream:.0f} tok/s; end to end raw {r_e2e:.0f}, "
          f"app {a_e2e:.0f} ({a['updates']} updates)", file=sys.stderr, flush=True)
    return {"tokens": ntok, "raw_stream_tok_s": r_stream, "raw_e2e_tok_s": r_e2e,
            "app_stream_tok_s": a_stream, "app_e2e_tok_s": a_e2e, "app_updates": a["updates"],
            "raw_first_chunk_s": r["first"] - r["started"], "app_first_chunk_s": a["first"] - a["started"],
            "floor_first_chunk_s": b1 - b0,
            "raw_cpu_s": r["cpu"], "app_server_cpu_s": a["cpu"],
            "same_text": a["text"].strip() == r["text"].strip()}


def summary(model: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the pairs. Raw and app runs alternate; each pair's ratio is taken, then the
    median (the machine's load drifts between pairs far more than within one)."""
    ntok = runs[0]["tokens"]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "model": model, "tokens": ntok, "runs": runs,
        "raw_tok_s": med("raw_stream_tok_s"), "app_tok_s": med("app_stream_tok_s"),
        "rate_ratio": statistics.median(r["app_stream_tok_s"] / r["raw_stream_tok_s"] for r in runs),
        "raw_e2e_tok_s": med("raw_e2e_tok_s"), "app_e2e_tok_s": med("app_e2e_tok_s"),
        "e2e_rate_ratio": statistics.median(r["app_e2e_tok_s"] / r["raw_e2e_tok_s"] for r in runs),
        "raw_first_chunk_s": med("raw_first_chunk_s"), "app_first_chunk_s": med("app_first_chunk_s"),
        # Gradio's floor: a bare streaming endpoint's first chunk; what the app adds beyond raw and the floor
        "floor_first_chunk_s": med("floor_first_chunk_s"),
        "app_own_first_chunk_s": statistics.median(
            r["app_first_chunk_s"] - r["raw_first_chunk_s"] - r["floor_first_chunk_s"] for r in runs),
        # CPU per token is what the page's machinery adds, whatever else the machine is doing.
        "raw_cpu_ms_per_token": 1000 * med("raw_cpu_s") / ntok,
        "app_server_cpu_ms_per_token": 1000 * med("app_server_cpu_s") / ntok,
        "updates_per_answer": med("app_updates"),
        "same_text": all(r["same_text"] for r in runs),
    }


def run_stream(args, image_paths: list[Path], server=None) -> dict[str, Any]:
    """The streaming comparison against ``server`` (default: ``app.py`` in a process of its own).

    ``args`` needs ``stream_model``, ``stream_tokens``, ``stream_repeats``, ``stream_threads``
    and ``work`` (a scratch folder).
    """
    from gradio_client import Client

    from llava_app.benchmarks.ttft import bare_endpoint, first_chunk

    picture = image_paths[0]
    server = server or AppProcess(args)
    try:
        raw = RawRecipe(args, picture)
        wait_for(server)
        with bare_endpoint() as bare_url:
            bare = Client(bare_url, verbose=False)
            # warm the paths up (first-call costs are not streaming)
            raw.run(), through_the_app(server, picture), first_chunk(bare, "/stream", "warm up")
            runs = [pair(raw, server, picture, bare) for _ in range(args.stream_repeats)]
            bare.close()
    finally:
        server.close()
    return summary(args.stream_model, runs)
