"""What fitting the context window costs per turn, beside the generation it guards.

A long chat with three LLaVA-1.5-sized images (576 tokens each) on the ``tiny-random-bench``
model, in a 2,560-token window (room for a dozen turns beside the images): for each turn, the time to
count (and, at a drop, to choose
the turns to drop) and the time to generate the answer, measured side by side in one run.
Prints a table and writes JSON.

    python -m llava_app.benchmarks.context --turns 40 --out context_fit.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from llava_app.benchmarks.common import quiet_environment, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.context", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-bench", help="model id or tiny preset")
    parser.add_argument("--window", type=int, default=2560, help="context window in tokens")
    parser.add_argument("--turns", type=int, default=40, help="questions to ask")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length")
    parser.add_argument("--summarize", action="store_true", help="also time --summarize-dropped")
    parser.add_argument("--out", default="artifacts/bench_context_fit.json", help="where to write the JSON results")
    return parser.parse_args(argv)


class TimedFit:
    """The service's context fitter with the time of its last ``fit`` noted (``last_s``)."""

    def __init__(self, fitter):
        self.fit_at_once, self.last_s = fitter.fit, 0.0
        fitter.fit = self

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.fit_at_once(*args, **kwargs)
        finally:
            self.last_s = time.perf_counter() - started


def long_chat(args, folder: Path) -> tuple[list[dict], int]:
    """Three pictures, then ``args.turns`` questions; one row per turn, and the images' prompt tokens."""
    from PIL import Image

    from llava_app.chat.context import ContextFitter
    from llava_app.chat.conversation import Conversation
    from llava_app.chat.service import ChatService
    from llava_app.engine.base import GenerationParams
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.storage.images import ImageStore

    store = ImageStore(folder / "images")
    backend = LocalBackend(args.model, store, device="cpu", context_length=args.window)
    fitter = ContextFitter(backend, summarize=args.summarize)
    service = ChatService(backend, store, context=fitter)
    conv = Conversation()
    files = []
    for i, color in enumerate(["red", "green", "blue"]):
        path = folder / f"{color}.png"
        Image.effect_noise((640 + 64 * i, 480), 40 + 10 * i).convert("RGB").save(path)
        files.append((str(path), path.name))
    service.add_images(conv, files)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    timed = TimedFit(fitter)
    rows = []
    for k in range(args.turns):
        before = conv.first_visible
        service.ask(conv, f"what is different between the first picture and the last one, question {k}")
        started = time.perf_counter()
        for _ in service.stream_answer(conv, params, "You are a helpful assistant."):
            pass
        total = time.perf_counter() - started
        rows.append({"turn": k, "fit_s": timed.last_s, "generate_s": total - timed.last_s,
                     "prompt_tokens": conv.last_prompt.n_tokens, "drop": conv.first_visible != before,
                     "hidden_turns": conv.first_visible})
        print(f"turn {k}: fit {1000 * timed.last_s:.0f} ms, generate {1000 * (total - timed.last_s):.0f} ms, "
              f"{conv.last_prompt.n_tokens} prompt tokens{', drop' if rows[-1]['drop'] else ''}", file=sys.stderr)
    return rows, conv.last_prompt.n_image_tokens


def summary(selected: list[dict]) -> dict:
    """Medians of the fitting and generating times over some turns."""
    if not selected:
        return {"turns": 0}
    fit = statistics.median(r["fit_s"] for r in selected)
    gen = statistics.median(r["generate_s"] for r in selected)
    return {"turns": len(selected), "fit_ms": 1000 * fit, "generate_ms": 1000 * gen, "fit_share": fit / (fit + gen)}


def print_table(result: dict, turns: int) -> None:
    print(f"{result['model']}, window {result['window']}, 3 images = {result['image_tokens']} tokens, "
          f"{turns} turns, {result['drops']} drops")
    print(f"{'turns':<14}{'n':>4}{'fit ms':>10}{'generate ms':>14}{'fit share':>11}")
    for name in ("plain_turns", "drop_turns"):
        s = result[name]
        if s["turns"]:
            print(f"{name:<14}{s['turns']:>4}{s['fit_ms']:>10.1f}{s['generate_ms']:>14.1f}"
                  f"{100 * s['fit_share']:>10.1f}%")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet_environment()
    with tempfile.TemporaryDirectory(prefix="context-fit-") as tmp:
        rows, image_tokens = long_chat(args, Path(tmp))
    result = {
        "model": args.model, "window": args.window, "images": 3,
        "image_tokens": image_tokens, "max_new_tokens": args.max_new_tokens,
        "summarize": args.summarize, "drops": sum(r["drop"] for r in rows),
        "plain_turns": summary([r for r in rows if not r["drop"]]),
        "drop_turns": summary([r for r in rows if r["drop"]]),
        "rows": rows,
    }
    print_table(result, args.turns)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
