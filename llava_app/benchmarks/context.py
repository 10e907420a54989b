"""What fitting the context window costs per turn, beside the generation it guards.

A long chat with three LLaVA-1.5-sized images (576 tokens each) on the ``tiny-random-bench``
model, in a 2,560-token window (room for a dozen turns beside the images): for each turn, the time to count (and, at a drop, to choose
the turns to drop) and the time to generate the answer, measured side by side in one run.
Prints a table and writes JSON.

    python -m llava_app.benchmarks.context --turns 40 --out context_fit.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path



def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-bench", help="model id or tiny preset")
    parser.add_argument("--window", type=int, default=2560, help="context window in tokens")
    parser.add_argument("--turns", type=int, default=40, help="questions to ask")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length")
    parser.add_argument("--summarize", action="store_true", help="also time --summarize-dropped")
    parser.add_argument("--out", default="artifacts/bench_context_fit.json", help="where to write the JSON results")
    args = parser.parse_args(argv)

    from PIL import Image

    from llava_app.engine.base import GenerationParams
    from llava_app.engine.local import LocalBackend
    from llava_app.chat.context import ContextFitter
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import ImageStore
    from llava_app.chat.service import ChatService

    tmp = Path(tempfile.mkdtemp(prefix="context-fit-"))
    store = ImageStore(tmp / "images")
    backend = LocalBackend(args.model, store, device="cpu", context_length=args.window)
    fitter = ContextFitter(backend, summarize=args.summarize)
    service = ChatService(backend, store, context=fitter)
    conv = Conversation()
    files = []
    for i, color in enumerate(["red", "green", "blue"]):
        path = tmp / f"{color}.png"
        Image.effect_noise((640 + 64 * i, 480), 40 + 10 * i).convert("RGB").save(path)
        files.append((str(path), path.name))
    service.add_images(conv, files)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)

    fit_at_once, run_fit = fitter.fit, {}

    def timed_fit(*a, **kw):
        started = time.perf_counter()
        try:
            return fit_at_once(*a, **kw)
        finally:
            run_fit["s"] = time.perf_counter() - started

    fitter.fit = timed_fit
    rows = []
    for k in range(args.turns):
        before = conv.first_visible
        service.ask(conv, f"what is different between the first picture and the last one, question {k}")
        started = time.perf_counter()
        for _ in service.stream_answer(conv, params, "You are a helpful assistant."):
            pass
        total = time.perf_counter() - started
        rows.append({"turn": k, "fit_s": run_fit["s"], "generate_s": total - run_fit["s"],
                     "prompt_tokens": conv.last_prompt.n_tokens, "drop": conv.first_visible != before,
                     "hidden_turns": conv.first_visible})
        print(f"turn {k}: fit {1000 * run_fit['s']:.0f} ms, generate {1000 * (total - run_fit['s']):.0f} ms, "
              f"{conv.last_prompt.n_tokens} prompt tokens{', drop' if rows[-1]['drop'] else ''}", file=sys.stderr)

    def summary(selected: list[dict]) -> dict:
        if not selected:
            return {"turns": 0}
        fit = statistics.median(r["fit_s"] for r in selected)
        gen = statistics.median(r["generate_s"] for r in selected)
        return {"turns": len(selected), "fit_ms": 1000 * fit, "generate_ms": 1000 * gen, "fit_share": fit / (fit + gen)}

    result = {
        "model": args.model, "window": args.window, "images": 3,
        "image_tokens": conv.last_prompt.n_image_tokens, "max_new_tokens": args.max_new_tokens,
        "summarize": args.summarize, "drops": sum(r["drop"] for r in rows),
        "plain_turns": summary([r for r in rows if not r["drop"]]),
        "drop_turns": summary([r for r in rows if r["drop"]]),
        "rows": rows,
    }
    print(f"{args.model}, window {args.window}, 3 images = {result['image_tokens']} tokens, "
          f"{args.turns} turns, {result['drops']} drops")
    print(f"{'turns':<14}{'n':>4}{'fit ms':>10}{'generate ms':>14}{'fit share':>11}")
    for name in ("plain_turns", "drop_turns"):
        s = result[name]
        if s["turns"]:
            print(f"{name:<14}{s['turns']:>4}{s['fit_ms']:>10.1f}{s['generate_ms']:>14.1f}{100 * s['fit_share']:>10.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
