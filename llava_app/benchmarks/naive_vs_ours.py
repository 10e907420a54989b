"""Naive against ours: the same multi-turn chat played by the usual rebuild-everything loop and by the app.

``naive`` keeps the history and, every turn, calls ``apply_chat_template`` and the processor on all
of it with all the images, then ``generate``; ``ours`` is the app's ``ChatService`` and
``LocalBackend`` (prefix KV reuse, feature cache). Each side runs in a worker process of its own
(``python -m llava_app.benchmarks.multiturn --phase naive|ours``), driven turn by turn; a test may
drive both in this process (``InProcess``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import PeakRSS, VisionCalls, as_the_app_stores_it, threads_env

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
        brought = self._pending + list(zip(labels, images, strict=False))
        self._pending = []
        for label, img in brought:
            content += [{"type": "text", "text": f"{label}:"}, {"type": "image"}]
            self.images.append(img)
        self._brought.append(brought)
        content.append({"type": "text", "text": question})
        self.history.append({"role": "user", "content": content})
        from llava_app.engine.local.backend import inline_image_token, template_messages

        # the same message layout the engine gives the template (labels next to their pictures)
        messages = template_messages(self.history, inline=inline_image_token(self.processor))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
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
                "prompt_sha": prompt_sha(inputs["input_ids"][0]),
                "ttft": first[0] - started, "total": time.perf_counter() - started}

    def undo(self) -> None:
        """Drop the last exchange; the images it brought wait for the next question."""
        del self.history[-2:]
        self._pending = self._brought.pop()
        if self._pending:
            del self.images[-len(self._pending):]


def prompt_sha(ids) -> str:
    """A digest of a prompt's token ids: greedy answers are compared where the two sides gave the model the same
    prompt. The naive side re-tokenises its answers' text; the app keeps the ids the model wrote, and a random
    model's byte-level answers often tokenise otherwise (Qwen2's BPE), so later prompts can differ by a token."""
    import hashlib

    return hashlib.sha256(str([int(i) for i in ids]).encode()).hexdigest()[:16]


# ----- the two sides: one worker process each, driven turn by turn --------------------------------
def _turn_record(name: str, result: dict[str, Any], vision: VisionCalls, calls0: int, inputs0: int,
                 peak: PeakRSS, **extra) -> dict[str, Any]:
    return {"turn": name, "ttft_s": result["ttft"], "total_s": result["total"],
            "prompt_tokens": result["prompt_tokens"], "prefilled_tokens": result["prefilled_tokens"],
            "vision_calls": vision.calls - calls0, "vision_inputs": vision.inputs - inputs0,
            "peak_rss_mib": round(peak.peak, 1), "new_token_ids": result["new_token_ids"],
            "prompt_sha": result["prompt_sha"], **extra}


class NaiveSide:
    """The rebuild-everything loop."""

    def __init__(self, args, image_paths: list[Path]):
        from llava_app.engine.local.models import LoadOptions, load_model_and_processor

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
        from llava_app.chat.conversation import Conversation
        from llava_app.chat.service import ChatService
        from llava_app.engine.base import GenerationParams
        from llava_app.engine.local.backend import LocalBackend
        from llava_app.storage.images import ImageStore

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
            started, first = time.perf_counter(), None
            self.service.ask(self.conv, question)
            for text in self.service.stream_answer(self.conv, self.params, SYSTEM_PROMPT):
                first = first or (time.perf_counter() if text else None)  # timed by the consumer, as the page
            total = time.perf_counter() - started
        s, reuse = self.backend.last_run, self.backend.reuse
        r = {"ttft": (first or time.perf_counter()) - started, "total": total, "prompt_tokens": s.prompt_tokens,
             "prefilled_tokens": s.prefilled_tokens, "new_token_ids": s.new_token_ids,
             "prompt_sha": prompt_sha(s.prompt_ids)}
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
        from llava_app.chat.conversation import Conversation
        from llava_app.engine.base import GenerationParams

        kv = self.backend.reuse.kv
        kv.budget = int(kv.nbytes * 1.05)
        if self.backend.scheduler is not None:  # it hands the kept prefixes what the running batch leaves
            self.backend.scheduler.kv_budget = kv.budget
        other = Conversation()
        self.service.add_images(other, [(str(self.image_paths[0]), self.image_paths[0].name)])
        self.service.ask(other, "What is this ?")
        for _ in self.service.stream_answer(other, GenerationParams(max_new_tokens=8), SYSTEM_PROMPT):
            pass
        return {"evicted": self.conv.id not in kv, "budget_mib": round(kv.budget / 2**20, 1)}


SIDES = {"naive": NaiveSide, "ours": OursSide}


def perform(side, cmd: dict[str, Any]) -> dict[str, Any]:
    """Run one command (``turn``, ``undo``, ``evict``) on a side; returns its record."""
    if cmd["op"] == "turn":
        return side.turn(cmd["name"], cmd["question"], cmd.get("images", False))
    return getattr(side, cmd["op"])()


def serve_side(args, image_paths: list[Path]) -> None:
    """A worker: builds one side, then runs the commands read from stdin (one JSON per line)."""
    side = SIDES[args.phase](args, image_paths)
    out = sys.stdout
    sys.stdout = sys.stderr  # only results go to the pipe
    print(_RESULT + json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            return
        print(_RESULT + json.dumps(perform(side, cmd)), file=out, flush=True)


_RESULT = "@@result "


class _Worker:
    """The parent's handle on a side's worker process."""

    def __init__(self, args, name: str):
        cmd = [sys.executable, "-m", "llava_app.benchmarks.multiturn", "--phase", name, "--work", args.work,
               "--model", args.model, "--new-tokens", str(args.new_tokens), "--kv-cache-mb", str(args.kv_cache_mb),
               "--threads", str(args.threads)]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=threads_env(args.threads))
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


class InProcess:
    """A side built and driven in this process (a smoke test; its memory peaks mix with the other side's)."""

    def __init__(self, args, name: str, image_paths: list[Path]):
        self.side = SIDES[name](args, image_paths)

    def send(self, **cmd) -> dict[str, Any]:
        return json.loads(json.dumps(perform(self.side, cmd)))  # the same records a worker sends

    def close(self) -> None:
        pass


def chat_plan(turns: int) -> list[tuple[str, str, str, bool]]:
    """The steps both sides play: ``(op, turn name, question, with the images)``."""
    plan = [("turn", str(i), q, i == 1) for i, q in enumerate(QUESTIONS[:turns], start=1)]
    return plan + [("undo", "", "", False), ("turn", "after undo", UNDO_QUESTION, False),
                   ("evict", "", "", False), ("turn", "after eviction", EVICTED_QUESTION, False)]


def run_chat(args, sides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides play the same chat; each step runs on one side, then on the other, so the two
    see the same machine load (the CPU is shared), each in its own process (own memory peak)
    unless ``sides`` (``{"naive": ..., "ours": ...}`` with ``send``/``close``) are given."""
    sides = sides or {name: _Worker(args, name) for name in ("naive", "ours")}
    results: dict[str, dict[str, Any]] = {name: {"turns": []} for name in sides}
    try:
        for op, name, question, images in chat_plan(args.turns):
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
