"""Editing turn 3 of a 6-turn chat: the app's branch (prefix KV reuse) against the rebuild-everything recipe.

A six-turn chat about four pictures (two brought by turn 1, two by turn 2) is played once by
the app. Then, ``--repeats`` times, turn 3 is edited: ``ours`` is the app's ``ChatService.edit``
(the KV of turns 1-2 is reused, no picture goes through the vision tower again); ``naive``
re-templates turns 1-2 and the edited question and runs the processor and ``generate`` on all of
it with all four pictures, as a chat demo that keeps only the history does. Both use one model in
this process, one after the other for each edit, so they see the same machine load. Then the
first branch is switched back to and asked a follow-up (its KV is still cached), against the
naive recipe rebuilding all six turns. Reported: time to first token, tokens prefilled,
vision-tower calls, and whether the greedy answers are the same token for token.

    python -m llava_app.benchmarks.edit_branch            # about a minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import (
    VisionCalls,
    as_the_app_stores_it,
    bench_images,
    prepare_models,
    quiet_environment,
    write_json,
)
from llava_app.benchmarks.naive_vs_ours import SYSTEM_PROMPT, NaiveChat, prompt_sha

QUESTIONS = [
    "Describe Image 1 and Image 2 .",
    "Now describe Image 3 and Image 4 .",
    "Which image has the most red ?",
    "Compare Image 1 and Image 3 .",
    "What is in the background of Image 2 ?",
    "Which two images are most similar ?",
]
EDITS = ["Which image has the most blue ?", "Which image is the darkest ?", "Which image has the most green ?",
         "Which image is the brightest ?", "Which image has the most shapes ?"]
FOLLOW_UP = "Are you sure ?"


class Bench:
    """The app's service and engine, and the naive recipe on the same model."""

    def __init__(self, args, pictures: list[Path]):
        from llava_app.chat.conversation import Conversation
        from llava_app.chat.service import ChatService
        from llava_app.engine.base import GenerationParams
        from llava_app.engine.local.backend import LocalBackend
        from llava_app.storage.images import ImageStore

        store = ImageStore(Path(args.work) / "images")
        self.backend = LocalBackend(args.model, store, device="cpu", kv_cache_bytes=int(args.kv_cache_mb * 2**20))
        self.service = ChatService(self.backend, store, max_images=8, stream_interval=0.0)
        self.vision = VisionCalls(self.backend.model)
        self.params = GenerationParams(temperature=0.0, max_new_tokens=args.new_tokens)
        self.pictures = pictures
        self.naive_pictures = [as_the_app_stores_it(p, self.backend.processor) for p in pictures]
        self.conv = Conversation()

    def _answer(self, started: float) -> dict[str, Any]:
        first = None
        for text in self.service.stream_answer(self.conv, self.params, SYSTEM_PROMPT):
            first = first or (time.perf_counter() if text else None)
        s = self.backend.last_run
        return {"ttft_s": (first or time.perf_counter()) - started, "total_s": time.perf_counter() - started,
                "prompt_tokens": s.prompt_tokens, "prefilled_tokens": s.prefilled_tokens,
                "reused_tokens": s.reused_tokens, "new_token_ids": s.new_token_ids,
                "prompt_sha": prompt_sha(s.prompt_ids)}

    def _measured(self, run) -> dict[str, Any]:
        calls, inputs = self.vision.calls, self.vision.inputs
        result = run()
        return {**result, "vision_calls": self.vision.calls - calls, "vision_images": self.vision.inputs - inputs}

    def play(self) -> None:
        """The six turns, by the app (not measured)."""
        for k, question in enumerate(QUESTIONS):
            if k < 2:
                self.service.add_images(self.conv, [(str(p), p.name) for p in self.pictures[2 * k:2 * k + 2]])
            self.service.ask(self.conv, question)
            self._answer(time.perf_counter())

    def ours_edit(self, question: str) -> dict[str, Any]:
        def run():
            started = time.perf_counter()
            self.service.edit(self.conv, 2, question)
            return self._answer(started)
        return self._measured(run)

    def ours_switch_back_and_ask(self) -> dict[str, Any]:
        def run():
            started = time.perf_counter()
            self.service.switch_branch(self.conv, 2, 0)
            self.service.ask(self.conv, FOLLOW_UP)
            return self._answer(started)
        return self._measured(run)

    def naive(self, turns: int, question: str) -> dict[str, Any]:
        """The recipe: the first ``turns`` turns of the branch shown now as history, then ``question``."""
        from llava_app.engine.local.backend import template_messages

        chat = NaiveChat(self.backend.model, self.backend.processor)
        chat.history = template_messages(self.conv.messages(SYSTEM_PROMPT, 0, "")[:1 + 2 * turns])
        chat.images = [self.naive_pictures[im.number - 1] for im in self.conv.images if im.joined_at < turns]
        brought = [] if turns >= 2 else self.naive_pictures[2 * turns:4]
        labels = [f"Image {3 + k}" for k in range(len(brought))]
        r = self._measured(lambda: chat.ask(question, brought, labels, self.params.max_new_tokens))
        return {"ttft_s": r["ttft"], "total_s": r["total"], "prompt_tokens": r["prompt_tokens"],
                "prefilled_tokens": r["prompt_tokens"], "new_token_ids": r["new_token_ids"],
                "prompt_sha": r["prompt_sha"],
                "vision_calls": r["vision_calls"], "vision_images": r["vision_images"]}


def run(args, pictures: list[Path]) -> dict[str, Any]:
    bench = Bench(args, pictures)
    bench.play()
    edits = []
    for question in EDITS[:args.repeats]:
        naive = bench.naive(2, question)  # before ours: both see turns 1-2 of the branch shown
        ours = bench.ours_edit(question)
        edits.append({"question": question, "naive": naive, "ours": ours,
                      "same_tokens": naive["new_token_ids"] == ours["new_token_ids"],
                      "same_prompt": naive["prompt_sha"] == ours["prompt_sha"]})
        bench.service.switch_branch(bench.conv, 2, 0)  # the next edit starts from the first branch again
    bench.service.switch_branch(bench.conv, 2, 1)
    ours_back = bench.ours_switch_back_and_ask()
    # the naive recipe for the same question: all six turns of the first branch, then the follow-up
    bench.service.undo(bench.conv)
    naive_back = bench.naive(6, FOLLOW_UP)
    return summarise(args, edits, naive_back, ours_back)


def summarise(args, edits: list[dict], naive_back: dict, ours_back: dict) -> dict[str, Any]:
    ratio = statistics.median(e["naive"]["ttft_s"] / e["ours"]["ttft_s"] for e in edits)
    ours_vision = sum(e["ours"]["vision_images"] for e in edits)
    targets = {
        "edit_ttft_ratio": {"value": round(ratio, 2), "target": ">= 5", "met": ratio >= 5},
        "edit_vision_images_of_turns_1_2": {"value": ours_vision, "target": 0, "met": ours_vision == 0},
    }
    return {"model": args.model, "new_tokens": args.new_tokens, "repeats": len(edits), "edits": edits,
            "switch_back": {"naive": naive_back, "ours": ours_back,
                            "same_tokens": naive_back["new_token_ids"] == ours_back["new_token_ids"],
                            "same_prompt": naive_back["prompt_sha"] == ours_back["prompt_sha"]},
            "targets": targets}


def table(report: dict[str, Any]) -> str:
    """A Markdown table: the median edit and the switch back, naive against ours."""
    def row(name: str, naive: dict, ours: dict, same: bool, same_prompt: bool = True) -> str:
        return (f"| {name} | {naive['ttft_s']:.2f} | {ours['ttft_s']:.3f} | {naive['ttft_s'] / ours['ttft_s']:.1f}x "
                f"| {naive['prefilled_tokens']} | {ours['prefilled_tokens']} | {naive['vision_calls']} "
                f"({naive['vision_images']}) | {ours['vision_calls']} ({ours['vision_images']}) "
                f"| {('yes' if same else 'NO') if same_prompt else 'n/a (prompts differ)'} |")

    lines = ["| step | TTFT naive (s) | TTFT ours (s) | naive/ours | prefilled naive | prefilled ours "
             "| vision calls (images) naive | vision calls (images) ours | same tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_ratio = sorted(report["edits"], key=lambda e: e["naive"]["ttft_s"] / e["ours"]["ttft_s"])
    middle = by_ratio[len(report["edits"]) // 2]
    lines.append(row("edit turn 3 of 6 (median)", middle["naive"], middle["ours"], middle["same_tokens"],
                     middle.get("same_prompt", True)))
    back = report["switch_back"]
    lines.append(row("switch back, ask", back["naive"], back["ours"], back["same_tokens"],
                     back.get("same_prompt", True)))
    lines.append("")
    for name, t in report["targets"].items():
        lines.append(f"- {name}: {t['value']} (target {t['target']}) {'met' if t['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.edit_branch", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-random-bench", help="the model (LLaVA-1.5-like geometry by default)")
    p.add_argument("--new-tokens", type=int, default=16, help="new tokens per answer (greedy)")
    p.add_argument("--repeats", type=int, default=3, help=f"edits of turn 3, each measured (at most {len(EDITS)})")
    p.add_argument("--kv-cache-mb", type=float, default=2048.0, help="the engine's KV budget")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="artifacts/bench_edit_branch.json", help="JSON report")
    p.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_environment()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llava-bench-") as tmp:
        args.work = args.work or tmp
        prepare_models(args.model)
        report = run(args, bench_images(Path(args.work) / "pictures"))
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nJSON: {out}")
    return 0 if all(t["met"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
