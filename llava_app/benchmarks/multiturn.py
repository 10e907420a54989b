"""Multi-turn speed benchmark: the usual rebuild-everything chat loop against this app's engine.

Run ``python -m llava_app.benchmarks.multiturn`` (two to five minutes on a 2-core CPU). In one run, on
the same random-weight model (``tiny-faithful-bench`` by default: the interleave checkpoint's Qwen2
tokenizer, ChatML template and 729 tokens per image; ``--model tiny-random-bench`` for the word-level
tokenizer with LLaVA-1.5 geometry, 576 tokens per image), it plays the same chat twice:

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

The chat comparison is in ``naive_vs_ours``, the streaming one in ``stream_rate``; this module
runs them (each in processes of its own), compares and reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import (
    bench_images,
    prepare_models,
    quiet_environment,
    threads_env,
    torch_threads,
    write_json,
)
from llava_app.benchmarks.naive_vs_ours import QUESTIONS, run_chat, serve_side
from llava_app.benchmarks.stream_rate import run_stream

TARGETS = {"ttft_ratio_turn6": 8.0, "stream_rate_ratio": 0.9}


# ----- the report -------------------------------------------------------------------------------------
def _same(row: dict[str, Any]) -> str:
    if not row.get("same_prompt", True):
        return "n/a (prompts differ)"
    return "yes" if row["same_tokens"] else "NO"


def compare_rows(naive: dict | None, ours: dict | None) -> list[dict[str, Any]]:
    """One row per turn: the two sides side by side."""
    rows = []
    for a, b in zip((naive or {}).get("turns", []), (ours or {}).get("turns", []), strict=False):
        rows.append({
            "turn": a["turn"], "naive_ttft_s": a["ttft_s"], "ours_ttft_s": b["ttft_s"],
            "ttft_ratio": a["ttft_s"] / b["ttft_s"], "naive_total_s": a["total_s"], "ours_total_s": b["total_s"],
            "naive_prefilled": a["prefilled_tokens"], "ours_prefilled": b["prefilled_tokens"],
            "naive_vision_calls": a["vision_calls"], "ours_vision_calls": b["vision_calls"],
            "naive_vision_images": a["vision_inputs"], "ours_vision_images": b["vision_inputs"],
            "naive_peak_rss_mib": a["peak_rss_mib"], "ours_peak_rss_mib": b["peak_rss_mib"],
            "ours_kv_cache_mib": b["kv_cache_mib"], "same_tokens": a["new_token_ids"] == b["new_token_ids"],
            "same_prompt": a.get("prompt_sha") == b.get("prompt_sha"),
        })
    return rows


def check_targets(rows: list[dict[str, Any]], ours: dict | None, stream: dict | None,
                  turns: int) -> dict[str, dict[str, Any]]:
    """Each target with its value and whether it was met."""
    targets: dict[str, dict[str, Any]] = {}
    if rows:
        by_turn = {r["turn"]: r for r in rows}
        evicted = by_turn.get("after eviction", {})
        targets.update({
            f"ttft_ratio_turn{turns}": {"value": by_turn[str(turns)]["ttft_ratio"],
                                        "target": TARGETS["ttft_ratio_turn6"]},
            # where both sides gave the model the same prompt ids (turn 1 always)
            "identical_greedy_tokens": {"value": all(r["same_tokens"] for r in rows if r["same_prompt"])
                                        and rows[0]["same_prompt"], "target": True},
            "no_vision_call_after_eviction": {"value": ours["evicted"] and evicted.get("ours_vision_calls") == 0,
                                              "target": True},
        })
    if stream:
        targets["stream_rate_ratio"] = {"value": stream["rate_ratio"], "target": TARGETS["stream_rate_ratio"]}
    for t in targets.values():
        t["met"] = t["value"] >= t["target"] if isinstance(t["target"], float) else t["value"] is t["target"]
    return targets


def summarise(naive: dict | None, ours: dict | None, stream: dict | None, args) -> dict[str, Any]:
    """Side-by-side rows, ratios and the targets."""
    rows = compare_rows(naive, ours)
    return {"model": args.model, "turns": args.turns, "images": 4, "new_tokens": args.new_tokens,
            "threads": args.threads or torch_threads(), "stream_threads": args.stream_threads or torch_threads(),
            "rows": rows, "stream": stream, "targets": check_targets(rows, ours, stream, args.turns),
            "naive": naive, "ours": ours}


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
            f"| {r['ours_peak_rss_mib']:.0f} | {r['ours_kv_cache_mib']:.0f} | {_same(r)} |")
    s = report.get("stream")
    if s:
        lines.append("")
        lines.append(
            f"Streaming ({s['model']}, {s['tokens']} tokens, {report['stream_threads']} thread(s), median of "
            f"{len(s['runs'])} alternating pairs): raw generate {s['raw_tok_s']:.0f} tok/s, the app through "
            f"gradio_client {s['app_tok_s']:.0f} tok/s, ratio {s['rate_ratio']:.2f}. End to end (request to last "
            f"token): raw {s['raw_e2e_tok_s']:.0f} tok/s, app {s['app_e2e_tok_s']:.0f} tok/s, ratio "
            f"{s['e2e_rate_ratio']:.2f}; first chunk after {s['raw_first_chunk_s']:.2f} s raw, "
            f"{s['app_first_chunk_s']:.2f} s app, {s['floor_first_chunk_s']:.2f} s for a bare Gradio "
            f"streaming endpoint (the app's own part: {1000 * s['app_own_first_chunk_s']:.0f} ms). CPU per "
            f"token: raw {s['raw_cpu_ms_per_token']:.2f} ms, app server "
            f"{s['app_server_cpu_ms_per_token']:.2f} ms ({s['updates_per_answer']:.0f} updates per answer). "
            f"Same text: {'yes' if s['same_text'] else 'NO'}.")
    lines.append("")
    for name, t in report["targets"].items():
        value = f"{t['value']:.2f}" if isinstance(t["value"], float) else str(t["value"])
        lines.append(f"- {name}: {value} (target {t['target']}) {'met' if t['met'] else 'NOT MET'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.multiturn", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-faithful-bench",
                   help="model for the multi-turn comparison (tiny-random-bench: the word-level tokenizer)")
    p.add_argument("--turns", type=int, default=6, help=f"turns before Undo (at most {len(QUESTIONS)})")
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per answer (greedy)")
    p.add_argument("--kv-cache-mb", type=float, default=2048.0, help="ours: KV budget before the eviction turn")
    p.add_argument("--stream-model", default="tiny-random",
                   help="model for the streaming-rate comparison (the fastest tiny model shows the app's own "
                   "per-token cost most)")
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
    cmd = [sys.executable, "-m", "llava_app.benchmarks.multiturn", "--phase", name, "--phase-out", str(out),
           "--work", args.work, "--model", args.model, "--turns", str(args.turns),
           "--new-tokens", str(args.new_tokens), "--kv-cache-mb", str(args.kv_cache_mb),
           "--stream-model", args.stream_model, "--stream-tokens", str(args.stream_tokens),
           "--stream-repeats", str(args.stream_repeats), "--threads", str(args.threads),
           "--stream-threads", str(args.stream_threads)]
    print(f"{name} ...", file=sys.stderr, flush=True)
    # The thread count is set the same way as for the app's server (it reads OMP_NUM_THREADS).
    subprocess.run(cmd, check=True, env=threads_env(args.stream_threads if name == "stream" else args.threads))
    return json.loads(out.read_text())


def run_worker(args) -> None:
    """Inside a phase's process: one side of the chat comparison, or the streaming comparison."""
    threads = args.stream_threads if args.phase == "stream" else args.threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    images = sorted((Path(args.work) / "pictures").glob("photo*.png"))
    if args.phase == "stream":
        Path(args.phase_out).write_text(json.dumps(run_stream(args, images)))
    else:
        serve_side(args, images)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_environment()
    if args.turns > len(QUESTIONS):
        raise SystemExit(f"--turns is at most {len(QUESTIONS)}")
    if args.phase:
        run_worker(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="llava-bench-") as tmp:
        args.work = args.work or tmp
        prepare_models(args.model, args.stream_model)  # built once, outside the timed phases
        bench_images(Path(args.work) / "pictures")
        started = time.perf_counter()
        naive, ours = (None, None) if args.stream_only else run_chat(args)
        stream = None if args.no_stream else _phase(args, "stream")
    report = summarise(naive, ours, stream, args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nJSON: {out}  ({report['wall_s']} s)")
    return 0 if all(t["met"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
