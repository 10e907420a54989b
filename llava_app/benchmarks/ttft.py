"""Where a follow-up's time to first token goes, against Gradio's own floor.

Run ``python -m llava_app.benchmarks.ttft`` (about a minute on a 2-core CPU). In one process, on
the same machine and in the same run, it serves two things on loopback:

* the app (``create_app`` + ``build_demo``, as ``app.py`` does) on ``tiny-faithful-bench`` by default;
* a bare Gradio streaming endpoint (a generator that yields a text at once): Gradio's floor.

A ``gradio_client`` opens a conversation on the app's ``/chat`` with one picture, then asks text-only
follow-ups, alternating with a call of the bare endpoint, and times each request to its first
non-empty streamed chunk. Probes wrapped around the app's parts (this process only; the app's code
is unchanged) stamp each follow-up's stages: context fitting, the chat template, the prompt layout
(tokenising, image placeholders, the token record), the KV cache checkout and crop, the wait for
the model (generate's set-up), prefill, the steps until the streamer lets the first text out, the
service and the hand-over to the web stack. "Ours" is the app's time to first chunk less the floor's
(medians). Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import (
    bench_images,
    free_port,
    launched_app,
    prepare_models,
    quiet_environment,
    write_json,
)

FOLLOW_UPS = ["Which image has the most red ?", "Compare the colours .", "What is in the background ?",
              "Is there text in it ?", "Which part is brightest ?", "Describe the shapes .",
              "What would you title it ?", "Count the circles ."]
TARGET_OURS_S = 0.050

#: (stage key, what it covers), in the order they happen
STAGES = [
    ("web_in", "request to the handler: client, HTTP, Gradio's queue, the handler up to the service"),
    ("context_fit", "context fitting (counting the prompt against the window)"),
    ("arm_request", "the service: arming the run, the request's messages"),
    ("template", "the chat template (render)"),
    ("layout", "prompt layout: tokenising, image placeholders, the token record"),
    ("cache", "KV cache checkout, common prefix, crop; generate's inputs"),
    ("to_prefill", "generate thread start and generate's set-up, to the first forward"),
    ("prefill", "prefill (the first forward: the new tokens after the reused prefix)"),
    ("to_text", "first token to first text: sampling, decode steps the streamer holds back, its queue"),
    ("service_out", "the service's first yield after the engine's first text"),
    ("web_out", "the service's first yield to the client's first chunk: thread hop, Gradio, HTTP"),
]


class Probe:
    """Timestamps of one request's stages, stamped by wrappers around the served app's parts."""

    def __init__(self):
        self.marks: dict[str, list[float]] = {}
        self.forwards: list[tuple[float, float]] = []
        self.prefill_cpu: float | None = None  # CPU seconds of the generate thread in the first forward

    def reset(self) -> None:
        self.marks, self.forwards, self.prefill_cpu = {}, [], None

    def stamp(self, name: str) -> None:
        self.marks.setdefault(name, []).append(time.perf_counter())

    def last_before(self) -> dict[str, float]:
        """Each mark's latest time up to the engine's first text (context fitting renders and lays out the
        prompt too; the engine's own calls are the last ones before its first text)."""
        end = self.marks["engine_text"][0]
        return {name: max([t for t in times if t <= end] or times[:1]) for name, times in self.marks.items()}

    def around(self, obj: Any, attr: str, name: str) -> None:
        """Stamp ``name:in`` and ``name:out`` around calls of ``obj.attr`` (an instance attribute shadows it)."""
        inner = getattr(obj, attr)

        def wrapped(*args, **kwargs):
            self.stamp(name + ":in")
            try:
                return inner(*args, **kwargs)
            finally:
                self.stamp(name + ":out")
        setattr(obj, attr, wrapped)

    def first_yield(self, obj: Any, attr: str, name: str, test: Callable[[Any], bool]) -> None:
        """Stamp ``name`` at the first item of ``obj.attr(...)``'s generator that passes ``test``."""
        inner = getattr(obj, attr)

        def wrapped(*args, **kwargs) -> Iterator[Any]:
            for item in inner(*args, **kwargs):
                if name not in self.marks and test(item):
                    self.stamp(name)
                yield item
        setattr(obj, attr, wrapped)

    def hook_model(self, model) -> None:
        """Time the model's forwards (the first is the prefill, the next ones decode steps), and the prefill's
        CPU time (one torch thread computes in the calling thread: a figure the machine's load does not
        stretch as it does wall time)."""
        def before(*_):
            self.forwards.append((time.perf_counter(), 0.0))
            self._cpu = time.thread_time()

        def after(*_):
            self.forwards[-1] = (self.forwards[-1][0], time.perf_counter())
            if self.prefill_cpu is None:
                self.prefill_cpu = time.thread_time() - self._cpu
        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)


def instrument(app) -> tuple[Probe, Any]:
    """Wrap the served app's service and local engine with a probe; returns it and the engine."""
    from llava_app.engine.base import TextDelta
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.engine.switchable import SwitchableBackend

    service = app.service
    engine = service.backend.engine if isinstance(service.backend, SwitchableBackend) else service.backend
    if not isinstance(engine, LocalBackend):
        raise SystemExit("the breakdown needs the local engine")
    probe = Probe()
    probe.around(service, "ask", "ask")
    probe.around(service.context, "fit", "fit")
    probe.around(engine, "render", "render")
    probe.around(engine.reuse, "_prepare", "prepare")
    probe.around(engine.reuse, "layout", "layout")
    probe.around(engine.reuse.records, "keep_recorded_ids", "records")
    probe.first_yield(engine, "stream", "engine_text", lambda e: isinstance(e, TextDelta))
    probe.first_yield(service, "stream_answer", "service_text", bool)
    probe.hook_model(engine.model)
    return probe, engine


def stages(m: dict[str, float], forwards: list[tuple[float, float]], submitted: float, first: float
           ) -> dict[str, float]:
    """One follow-up's stages in seconds (they add up to its time to first chunk)."""
    prefill_in, prefill_out = forwards[0]
    layout = (m["layout:out"] - m["layout:in"]) + (m["records:out"] - m["records:in"])
    return {
        "web_in": m["ask:in"] - submitted,
        "context_fit": m["fit:out"] - m["fit:in"],
        "arm_request": (m["fit:in"] - m["ask:in"]) + (m["render:in"] - m["fit:out"]),
        "template": m["render:out"] - m["render:in"],
        "layout": layout,
        "cache": (m["prepare:out"] - m["prepare:in"]) - layout + (m["prepare:in"] - m["render:out"]),
        "to_prefill": prefill_in - m["prepare:out"],
        "prefill": prefill_out - prefill_in,
        "to_text": m["engine_text"] - prefill_out,
        "service_out": m["service_text"] - m["engine_text"],
        "web_out": first - m["service_text"],
    }


def first_chunk(client, api_name: str, *args) -> tuple[float, float, str]:
    """Submit, read the stream to its end; (submitted, first non-empty chunk, final text)."""
    started = time.perf_counter()
    job = client.submit(*args, api_name=api_name)
    first = None
    for update in job:
        text = update if isinstance(update, str) else update[0]
        if first is None and text:
            first = time.perf_counter()
    final = job.result()
    return started, first or time.perf_counter(), final if isinstance(final, str) else final[0]


@contextlib.contextmanager
def bare_endpoint() -> Iterator[str]:
    """Gradio's floor: a streaming endpoint that yields text at once, served from this process
    (an async generator, as the app's /chat handler is)."""
    import gradio as gr

    async def stream(message: str):
        for k in range(1, 4):
            yield message[:k]

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(stream, box, out, api_name="stream")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def run(args, picture: Path) -> dict[str, Any]:
    """The app and the floor served here; follow-ups and bare calls alternate."""
    from gradio_client import Client, handle_file

    from llava_app.config import Config

    # the engine in this process (--no-engine-process): the breakdown times its own calls
    config = Config(model=args.model, device="cpu", data_dir=str(Path(args.work) / "app"), temperature=0.0,
                    max_new_tokens=args.new_tokens, max_new_tokens_limit=max(args.new_tokens, 2048),
                    engine_process=False)
    with launched_app(config) as (url, app, _demo), bare_endpoint() as bare_url:
        probe, engine = instrument(app)
        client, bare = Client(url, verbose=False), Client(bare_url, verbose=False)
        first_chunk(client, "/chat", "Describe Image 1 .", [handle_file(str(picture))], [])
        first_chunk(bare, "/stream", "warm up")
        follow, floor = [], []
        for k in range(args.repeats):
            probe.reset()
            submitted, first, _ = first_chunk(client, "/chat", FOLLOW_UPS[k % len(FOLLOW_UPS)], None, [])
            s = stages(probe.last_before(), probe.forwards, submitted, first)
            run_stats = engine.last_run
            follow.append({"ttft_s": first - submitted, "stages": s, "prefilled_tokens": run_stats.prefilled_tokens,
                           "reused_tokens": run_stats.reused_tokens, "prompt_tokens": run_stats.prompt_tokens,
                           "prefill_cpu_s": probe.prefill_cpu,
                           "forwards_before_text": sum(1 for a, _ in probe.forwards
                                                       if a < probe.marks["engine_text"][0])})
            b0, b1, _ = first_chunk(bare, "/stream", "a bare answer")
            floor.append(b1 - b0)
            print(f"  follow-up {k + 1}: {1000 * (first - submitted):6.1f} ms (prefilled "
                  f"{run_stats.prefilled_tokens}), floor {1000 * (b1 - b0):5.1f} ms", file=sys.stderr, flush=True)
        client.close()
        bare.close()
    return summary(args, follow, floor)


def summary(args, follow: list[dict[str, Any]], floor: list[float]) -> dict[str, Any]:
    """Medians: each stage, the app's time to first chunk, the floor, and ours (app less floor, paired)."""
    med = statistics.median
    ttft, floor_s = med(f["ttft_s"] for f in follow), med(floor)
    stage_s = {key: med(f["stages"][key] for f in follow) for key, _ in STAGES}
    web = stage_s["web_in"] + stage_s["web_out"]
    # Paired: each follow-up less the bare call right after it (the machine's load drifts between pairs).
    ours = med(f["ttft_s"] - b for f, b in zip(follow, floor, strict=False))
    return {"model": args.model, "repeats": args.repeats, "new_tokens": args.new_tokens,
            "ttft_s": ttft, "floor_s": floor_s, "ours_s": ours, "stages_s": stage_s,
            "web_beyond_floor_s": web - floor_s, "engine_s": sum(stage_s.values()) - web,
            "prefilled_tokens": med(f["prefilled_tokens"] for f in follow),
            "forwards_before_text": med(f["forwards_before_text"] for f in follow),
            "prefill_cpu_s": med(f["prefill_cpu_s"] for f in follow),
            "ours_less_prefill_s": ours - stage_s["prefill"],
            "target": {"ours_s": TARGET_OURS_S, "met": ours <= TARGET_OURS_S},
            "follow_ups": follow, "floor_runs_s": floor}


def table(report: dict[str, Any]) -> str:
    """A Markdown table of the stages (medians, ms), the totals and the target."""
    ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
    lines = ["| stage | median (ms) | what it covers |", "|---|---|---|"]
    for key, what in STAGES:
        lines.append(f"| {key} | {ms(report['stages_s'][key])} | {what} |")
    lines += [
        "",
        f"Follow-up time to first chunk through gradio_client ({report['model']}, median of {report['repeats']}, "
        f"{report['prefilled_tokens']:.0f} tokens prefilled, {report['forwards_before_text']:.0f} forward(s) "
        f"before the first text): {ms(report['ttft_s'])} ms; Gradio's floor (bare streaming endpoint, same run): "
        f"{ms(report['floor_s'])} ms; ours (each follow-up less the bare call after it, median): "
        f"{ms(report['ours_s'])} ms. Of the medians: the web stack (web_in + web_out) less the floor "
        f"{ms(report['web_beyond_floor_s'])} ms; the service and engine "
        f"{ms(report['engine_s'])} ms. The prefill is the model's own compute ({ms(report['prefill_cpu_s'])} ms of CPU "
        f"time in its thread); ours without it: {ms(report['ours_less_prefill_s'])} ms.",
        f"- ours: {ms(report['ours_s'])} ms (target at most {ms(report['target']['ours_s'])} ms) "
        f"{'met' if report['target']['met'] else 'NOT MET'}",
    ]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.ttft", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-faithful-bench", help="the model the app serves")
    p.add_argument("--repeats", type=int, default=9, help="follow-ups measured (each beside a bare call; medians)")
    p.add_argument("--new-tokens", type=int, default=8, help="new tokens per answer (greedy)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="artifacts/bench_ttft.json", help="JSON report")
    p.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    import tempfile

    args = parse_args(argv)
    quiet_environment()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llava-ttft-") as tmp:
        args.work = args.work or tmp
        prepare_models(args.model)
        picture = bench_images(Path(args.work) / "pictures", n=1)[0]
        report = run(args, picture)
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nJSON: {out}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["target"]["met"] else 1)
