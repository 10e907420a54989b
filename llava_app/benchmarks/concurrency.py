"""Several people at once: batched decoding against one answer at a time, through ``gradio_client``.

Run ``python -m llava_app.benchmarks.concurrency`` (about 4 minutes on a 2-core CPU). The app runs
as two server processes (``app.py``, as deployed) in one run, on the same model, settings and
questions: one with ``--max-batch 4`` (batched), one with ``--max-batch 1`` (one at a time).
Against each, from this process:

* each of 4 clients asks alone, one after the other: its answer and time to first chunk when alone;
* the 4 clients ask at once: the aggregate rate (new tokens over the time from the requests to
  the last chunk) and each answer, compared with the same client's answer alone (same server);
  ``--rounds`` such rounds, alternating between the two servers (both stay up; an idle one uses no
  CPU), so a drift in the machine's load falls on both sides: the ratio is the median of the rounds';
* all but one ask, and once each has text the last one asks: its time to first chunk, against the same
  request alone just before (the same caches warm: its picture's features are cached both times);
  ``--late-repeats`` such pairs, medians (one pair one at a time, where it waits behind the answer
  being written).

The clients stand for people on other machines, yet here they share the server's cores, so they
are kept light: each connects before the round (as an open page has: the server answers its config
requests before, not while it prefills the others), over plain HTTP without loading certificates, and
waits for its job's outputs rather than polling them (gradio_client's iterator polls every 1 ms; ``connect``, ``ask``).
Side by side in one run: 2.21x the old way, 2.52x with the connections made first (and 5 ms polling).

Every client sends its own picture with the same question, greedy, ``--new-tokens`` each (the bench
model never ends early: its special tokens' logits are zero, see ``faithful._randomise``, so every
answer is that many tokens; a model that can end early is counted as if it had not). Prints a table and
writes JSON (``--out``). On a GPU:
``python -m llava_app.benchmarks.concurrency --device cuda --model llava-hf/llava-interleave-qwen-0.5b-hf``
(a model from the Hub, downloaded once; ``--batch 8`` for the GPU's default batch).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import (
    REPO,
    bench_images,
    free_port,
    prepare_models,
    quiet_environment,
    threads_env,
    wait_until,
    write_json,
)

QUESTION = "Tell a long story about Image 1 ."
TARGETS = {"rate_ratio": 2.5, "late_ttft_ratio": 1.5}


class Server:
    """``app.py`` on a free loopback port with ``--max-batch batch`` and the model in its own process
    (``--engine-process``, both servers alike; ``--engine app``: in the app's process, both alike)."""

    def __init__(self, args, batch: int):
        port = free_port()
        n = str(args.new_tokens)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--model", args.model, "--device", args.device,
             "--port", str(port), "--data-dir", str(Path(args.work) / f"app-{batch}"), "--max-new-tokens", n,
             "--max-new-tokens-limit", str(max(args.new_tokens, 2048)), "--temperature", "0",
             "--max-batch", str(batch), "--no-history", *(["--engine-process"] if args.engine == "process" else [])],
            stdout=subprocess.DEVNULL, stderr=open(Path(args.work) / f"app-{batch}.log", "wb"),
            env=threads_env(args.threads))
        self.url = f"http://127.0.0.1:{port}/"

    def wait_ready(self, timeout: float = 300) -> None:
        import urllib.request

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}")
            try:
                return urllib.request.urlopen(self.url, timeout=2).status == 200
            except OSError:
                return False

        if wait_until(up, timeout, step=0.5) is None:
            raise RuntimeError("app.py did not come up")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Heard(list):
    """A job's list of streamed outputs that says when one is added (gradio_client appends to it under the
    job's lock, from the thread reading the server's stream): the client waits on ``event``, never polls."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def append(self, item) -> None:
        super().append(item)
        self.event.set()


def connect(url: str):
    """A client as an open page is: connected before it asks (its config fetched), a new conversation.

    ``ssl_verify=False``: the app is served over plain HTTP on loopback, so there is no certificate to
    check, and gradio_client opens a new ``httpx`` connection with an SSL context for every upload,
    queue join and stream; with verification each of them parses the system's CA bundle. Each job the
    client submits keeps its outputs in a ``Heard`` list.
    """
    from gradio_client import Client

    client = Client(url, verbose=False, ssl_verify=False)
    new_helper = client.new_helper

    def helper_that_tells(*args, **kwargs):
        helper = new_helper(*args, **kwargs)
        if not isinstance(getattr(helper.job, "outputs", None), list):
            raise RuntimeError("this gradio_client keeps a job's outputs otherwise; update the benchmark")
        helper.job.outputs = Heard()
        return helper

    client.new_helper = helper_that_tells
    return client


def ask(url: str, picture: Path, started: threading.Event | None = None, client=None) -> dict[str, Any]:
    """One answer (a new conversation unless ``client`` has one): text, time to first chunk, end time.

    The client waits for its job's outputs (``Heard``) and its end instead of looking at them in a loop:
    gradio_client's own iterator looks every millisecond, and a client polling every 5 ms (as before)
    woke 4-5 threads 200 times a second each on the two cores the measured server runs on.
    """
    from gradio_client import handle_file

    client = client or connect(url)
    t0 = time.perf_counter()
    job = client.submit(QUESTION, [handle_file(str(picture))], api_name="/chat")
    heard = job.communicator.job.outputs.event
    job.future.add_done_callback(lambda _: heard.set())
    first = None
    while True:
        heard.clear()  # then look: an output or the end that comes after this sets it again
        if any(job.outputs()):
            first = time.perf_counter()
            break
        if job.future.done():
            break
        heard.wait()
    if started is not None:
        started.set()
    error = job.future.exception()  # waits for the end
    end = time.perf_counter()
    if error is not None:
        raise RuntimeError(f"the app answered with an error: {error}")
    text = next((o for o in reversed(job.outputs()) if o), "")
    return {"start": t0, "first": first, "done": end, "ttft_s": (first or end) - t0, "text": text}


def at_once(url: str, pictures: list[Path], late: Path | None = None) -> tuple[list[dict], dict | None]:
    """All ``pictures`` asked at once; with ``late``, one more asked once each of the others has text.

    Every client connects first; then all ask together (a barrier), as people with the page open do.
    """
    results: list[Any] = [None] * len(pictures)
    flags = [threading.Event() for _ in pictures]
    clients = [connect(url) for _ in pictures]
    late_client = connect(url) if late is not None else None
    barrier = threading.Barrier(len(pictures))

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = ask(url, pictures[i], flags[i], clients[i])
        finally:
            flags[i].set()  # a failed request must not keep the late arrival waiting

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pictures))]
    for t in threads:
        t.start()
    late_result = None
    if late is not None:
        for f in flags:
            f.wait(600)
        late_result = ask(url, late, client=late_client)
    for t in threads:
        t.join()
    if any(r is None for r in results):
        raise RuntimeError("a client's request failed (see the error above)")
    return results, late_result


def note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def alone_and_late(args, server: Server, batch: int, pictures: list[Path]) -> dict[str, Any]:
    """Each client alone, then late arrivals paired with the same request alone, against one server."""
    ask(server.url, pictures[0])  # warm-up: the first request builds what later ones reuse
    alone = [ask(server.url, p) for p in pictures]
    note(f"--max-batch {batch}: alone, time to first chunk {[round(r['ttft_s'], 3) for r in alone]} s")
    repeats = args.late_repeats if batch > 1 else 1  # one at a time, a late arrival waits behind an answer
    late_alone, late = [], []
    for _ in range(repeats):  # in pairs: the machine's load drifts between them
        late_alone.append(ask(server.url, pictures[-1])["ttft_s"])
        late.append(at_once(server.url, pictures[:-1], late=pictures[-1])[1]["ttft_s"])
    note(f"--max-batch {batch}: late arrival {[round(x, 3) for x in late]} s, "
         f"alone {[round(x, 3) for x in late_alone]} s")
    return {"max_batch": batch, "alone": alone, "alone_texts": [r["text"] for r in alone],
            "alone_ttft_s": [r["ttft_s"] for r in alone], "late_alone_ttft_s": statistics.median(late_alone),
            "late_ttft_s": statistics.median(late), "late_alone_runs_s": late_alone, "late_runs_s": late,
            "rounds": []}


def round_at_once(args, server: Server, side: dict[str, Any], pictures: list[Path]) -> float:
    """All clients at once; the round's aggregate rate (its answers compared with each client's alone)."""
    together, _ = at_once(server.url, pictures)
    span = max(r["done"] for r in together) - min(r["start"] for r in together)
    tokens = args.new_tokens * len(pictures)
    side["rounds"].append({"span_s": span, "rate_tok_s": tokens / span, "texts": [r["text"] for r in together],
                           "ttft_s": [r["ttft_s"] for r in together]})
    note(f"--max-batch {side['max_batch']}: {len(pictures)} at once, {tokens} tokens in {span:.1f} s")
    return tokens / span


def run(args, pictures: list[Path]) -> dict[str, Any]:
    """Both servers up at once (an idle one uses no CPU); the at-once rounds alternate between them."""
    servers: dict[int, Server] = {}
    try:
        for batch in (args.batch, 1):  # one after the other: the first may build the tiny model
            servers[batch] = Server(args, batch)
            servers[batch].wait_ready()
        sides = {batch: alone_and_late(args, server, batch, pictures) for batch, server in servers.items()}
        ratios = []
        for k in range(args.rounds):  # side by side: each round asks both, in alternating order
            order = [args.batch, 1] if k % 2 == 0 else [1, args.batch]
            rates = {b: round_at_once(args, servers[b], sides[b], pictures) for b in order}
            ratios.append(rates[args.batch] / rates[1])
    finally:
        for server in servers.values():
            server.close()
    batched, single = sides[args.batch], sides[1]
    for side in (batched, single):
        side.pop("alone")
        side["rate_tok_s"] = statistics.median(r["rate_tok_s"] for r in side["rounds"])
        side["together_span_s"] = statistics.median(r["span_s"] for r in side["rounds"])
        side["together_texts"] = side["rounds"][-1]["texts"]
        side["tokens"] = args.new_tokens * len(pictures)
        side["identical_to_alone"] = [all(r["texts"][i] == t for r in side["rounds"])
                                      for i, t in enumerate(side["alone_texts"])]
    rate_ratio = statistics.median(ratios)
    late_ratio = batched["late_ttft_s"] / batched["late_alone_ttft_s"]
    identical = all(batched["identical_to_alone"])
    return {"model": args.model, "device": args.device, "engine": args.engine, "clients": len(pictures),
            "new_tokens": args.new_tokens,
            "threads": args.threads, "rounds": args.rounds, "round_ratios": ratios, "batched": batched,
            "one_at_a_time": single, "rate_ratio": rate_ratio, "late_ttft_ratio": late_ratio, "identical": identical,
            "same_as_one_at_a_time": batched["alone_texts"] == single["alone_texts"],
            "targets": {**TARGETS, "met": rate_ratio >= TARGETS["rate_ratio"] and identical
                        and late_ratio <= TARGETS["late_ttft_ratio"]}}


def table(r: dict[str, Any]) -> str:
    b, s = r["batched"], r["one_at_a_time"]
    ms = lambda x: f"{1000 * x:.0f}"  # noqa: E731
    lines = [
        f"| {r['clients']} clients, {r['new_tokens']} new tokens each, greedy ({r['model']}, {r['device']}) "
        f"| one at a time (`--max-batch 1`) | batched (`--max-batch {b['max_batch']}`) |",
        "|---|---|---|",
        f"| aggregate rate, all asking at once, median of {r['rounds']} rounds (tokens/s) | {s['rate_tok_s']:.1f} "
        f"| {b['rate_tok_s']:.1f} (**{r['rate_ratio']:.2f}x**, median of the rounds' ratios) |",
        f"| time from the requests to the last answer, median (s) | {s['together_span_s']:.1f} "
        f"| {b['together_span_s']:.1f} |",
        f"| answers identical to each client's answer alone | {sum(s['identical_to_alone'])}/{r['clients']} "
        f"| {sum(b['identical_to_alone'])}/{r['clients']} |",
        f"| time to first chunk alone, median (ms) | {ms(statistics.median(s['alone_ttft_s']))} "
        f"| {ms(statistics.median(b['alone_ttft_s']))} |",
        f"| time to first chunk of a request arriving while {r['clients'] - 1} decode (ms) | {ms(s['late_ttft_s'])} "
        f"| {ms(b['late_ttft_s'])} (**{r['late_ttft_ratio']:.2f}x** its {ms(b['late_alone_ttft_s'])} alone) |",
        "",
        f"Targets: rate at least {TARGETS['rate_ratio']}x: {r['rate_ratio']:.2f}x; answers identical: "
        f"{r['identical']}; late arrival at most {TARGETS['late_ttft_ratio']}x its time alone: "
        f"{r['late_ttft_ratio']:.2f}x. {'All met.' if r['targets']['met'] else 'NOT ALL MET.'} "
        f"Batched answers equal the one-at-a-time server's: {r['same_as_one_at_a_time']}.",
    ]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.concurrency", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-faithful-bench", help="the model the app serves")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=4, help="--max-batch of the batched server")
    p.add_argument("--clients", type=int, default=4, help="clients asking at once")
    p.add_argument("--new-tokens", type=int, default=128, help="new tokens per answer (greedy)")
    p.add_argument("--rounds", type=int, default=5, help="at-once rounds against each server, alternating")
    p.add_argument("--late-repeats", type=int, default=7, help="late arrivals measured (medians)")
    p.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: torch's default)")
    p.add_argument("--engine", choices=("process", "app"), default="process",
                   help="where each server holds the model: its own process (--engine-process, as the figures "
                        "were measured) or the app's (the smoke test: two processes fewer to start)")
    p.add_argument("--out", default="artifacts/bench_concurrency.json", help="JSON report")
    p.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    import tempfile

    args = parse_args(argv)
    quiet_environment()
    with tempfile.TemporaryDirectory(prefix="llava-concurrency-") as tmp:
        args.work = args.work or tmp
        prepare_models(args.model)
        pictures = bench_images(Path(args.work) / "pictures", n=args.clients)
        report = run(args, pictures)
    out = write_json(args.out, report)
    print(table(report))
    print(f"\nJSON: {out}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["targets"]["met"] else 1)
