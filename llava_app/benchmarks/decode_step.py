"""One decode step on the CPU, 1 sequence against 4, with ``F.linear`` against the engine's few-row products.

Run ``python -m llava_app.benchmarks.decode_step`` (about a minute on a 2-core CPU). In one process, on
the bench model as the engine loads it, transformers' own forward with its ``DynamicCache``: a prompt of
``--context`` tokens per sequence, then ``--steps`` decode steps, timed one by one; in ``--rounds``
rounds alternating between the two ways of multiplying (``cpu_linears.restore`` / ``install``), so a
drift in the machine's load falls on both. Also the output layer alone on the step's rows. Medians.
What it shows: how much a step of 4 costs against a step of 1 (the most batching can give is 4 over that
ratio), and how much of a step the output layer is. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from llava_app.benchmarks.common import prepare_models, quiet_environment, write_json

WAYS = ("F.linear", "few-row W·xᵀ")


def steps(model, width: int, context: int, n: int) -> list[float]:
    """Seconds of each of ``n`` decode steps of ``width`` sequences after a ``context``-token prompt."""
    import torch

    ids = torch.randint(100, 1000, (width, context), generator=torch.Generator().manual_seed(width))
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, times = out.past_key_values, []
        for _ in range(n):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            started = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - started)
    return times


def head_alone(model, width: int, n: int) -> list[float]:
    """Seconds of the output layer on ``width`` rows, ``n`` times."""
    import torch

    head = model.get_output_embeddings()
    x = torch.randn(width, 1, head.in_features, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        head(x)
        for _ in range(n):
            started = time.perf_counter()
            head(x)
            times.append(time.perf_counter() - started)
    return times


def run(args) -> dict[str, Any]:
    from llava_app.engine.local import cpu_linears
    from llava_app.engine.local.models import LoadOptions, load_model_and_processor

    model, _, _ = load_model_and_processor(args.model, LoadOptions(device="cpu"))
    if not cpu_linears.applies(model):
        raise SystemExit("the few-row path does not apply here (needs float32 on a CPU with MKL)")
    widths = (1, args.width)
    samples = {way: {w: {"step": [], "head": []} for w in widths} for way in WAYS}
    for k in range(args.rounds):
        for way in (WAYS if k % 2 == 0 else WAYS[::-1]):
            (cpu_linears.restore if way == WAYS[0] else cpu_linears.install)(model)
            for w in widths:
                samples[way][w]["step"] += steps(model, w, args.context, args.steps)
                samples[way][w]["head"] += head_alone(model, w, args.steps)
    cpu_linears.install(model)
    ms = {way: {w: {part: 1000 * statistics.median(xs) for part, xs in parts.items()} for w, parts in by.items()}
          for way, by in samples.items()}
    ratios = {way: ms[way][args.width]["step"] / ms[way][1]["step"] for way in WAYS}
    return {"model": args.model, "context": args.context, "steps": args.steps, "rounds": args.rounds,
            "width": args.width, "median_ms": {way: {str(w): v for w, v in by.items()} for way, by in ms.items()},
            "step_ratio": ratios, "batching_ceiling": {way: args.width / r for way, r in ratios.items()},
            "speedup": {str(w): ms[WAYS[0]][w]["step"] / ms[WAYS[1]][w]["step"] for w in widths}}


def table(r: dict[str, Any]) -> str:
    w, m = r["width"], r["median_ms"]
    lines = [f"| decode step, {r['model']}, {r['context']}-token context (median ms) | 1 sequence | {w} sequences "
             f"| {w} against 1 | at most from batching |", "|---|---|---|---|---|"]
    for way in WAYS:
        lines.append(f"| {way}: whole step | {m[way]['1']['step']:.1f} | {m[way][str(w)]['step']:.1f} "
                     f"| {r['step_ratio'][way]:.2f}x | {r['batching_ceiling'][way]:.2f}x |")
        lines.append(f"| {way}: output layer alone | {m[way]['1']['head']:.1f} | {m[way][str(w)]['head']:.1f} | | |")
    lines.append(f"\nThe few-row path makes a step of 1 {r['speedup']['1']:.2f}x and a step of {w} "
                 f"{r['speedup'][str(w)]:.2f}x as fast.")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.decode_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-faithful-bench", help="a tiny preset or a local model folder")
    p.add_argument("--width", type=int, default=4, help="sequences in the batched step")
    p.add_argument("--context", type=int, default=750, help="prompt tokens per sequence")
    p.add_argument("--steps", type=int, default=20, help="decode steps timed per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds, alternating the two ways")
    p.add_argument("--out", default="artifacts/bench_decode_step.json", help="JSON report")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_environment()
    prepare_models(args.model)
    report = run(args)
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nJSON: {out}")
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
