"""Memory left behind by API sessions that came and went, with and without our cleanup.

Runs the app on the tiny model; after a warm-up wave, N clients each upload an image, ask
once and close, and the run waits past the session time-to-live. Measures what stays allocated
(tracemalloc), how many session records Gradio still holds, and how many image files stay on
disk: once with the hand-over to Gradio switched off (Gradio's own behaviour), once with the
app as built. Prints a table and writes JSON (``--out``).

    python -m llava_app.benchmarks.sessions_memory --sessions 40
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava_app.benchmarks.common import launched_app, quiet_environment, small_png, wait_until, write_json

# The clients run in this process too: their HTTP buffers are left out of the server's count.
CLIENT_SIDE = ("httpcore", "httpx", "gradio_client", "urllib", "tracemalloc")


@contextlib.contextmanager
def gradio_cleanup_off() -> Iterator[None]:
    """Leave Gradio's per-session records to Gradio: the app's hand-over does nothing meanwhile."""
    from llava_app.web.gradio_compat import GradioSessions

    drop_now = GradioSessions.drop_now
    GradioSessions.drop_now = lambda self, session_hash: None
    try:
        yield
    finally:
        GradioSessions.drop_now = drop_now


def wave(url: str, app: Any, folder: Path, count: int, tag: str, settle_s: float) -> None:
    """``count`` API clients each upload a picture, ask once and leave; then wait until all have ended."""
    from gradio_client import Client, handle_file

    ttl = app.config.session_ttl
    for i in range(count):
        image = small_png(folder / f"{tag}{i}.png", (i * 5 % 256, 80, 160))
        client = Client(url, verbose=False)
        client.predict("what is it?", [handle_file(str(image))], api_name="/chat")
        client.close()
    wait_until(lambda: len(app.service.sessions) == 0, timeout=ttl * 4 + 30)
    time.sleep(settle_s)  # sweeps and Gradio's own expiry
    gc.collect()


def grown_bytes(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes allocated between the snapshots and still held, the clients' own left out."""
    client_side = [tracemalloc.Filter(False, f"*{name}*", all_frames=True) for name in CLIENT_SIDE]
    diffs = after.filter_traces(client_side).compare_to(before.filter_traces(client_side), "traceback")
    if os.environ.get("BENCH_VERBOSE"):
        for st in diffs[:8]:
            print(st.size_diff // 1024, "KB", st.count_diff, "|", " <- ".join(
                f"{Path(f.filename).name}:{f.lineno}" for f in list(st.traceback)[::-1][:4]))
    return sum(s.size_diff for s in diffs)


def run(n: int, cleanup: bool, ttl: float, warmup: int = 10, settle_s: float | None = None) -> dict[str, Any]:
    """One run of ``n`` sessions after ``warmup`` ones; what they left behind."""
    from llava_app.config import Config

    settle_s = ttl + 4 if settle_s is None else settle_s
    with contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sessions-")))
        config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=2, session_ttl=ttl)
        if not cleanup:
            stack.enter_context(gradio_cleanup_off())
        url, app, demo = stack.enter_context(launched_app(config))
        if warmup:
            wave(url, app, data, warmup, "warm", settle_s)  # first-use allocations (caches, pools) are not per-session
        tracemalloc.start(8)
        before = tracemalloc.take_snapshot()
        wave(url, app, data, n, "s", settle_s)
        if cleanup:  # the hand-over to Gradio runs on the server's loop: on a loaded machine it may take longer
            wait_until(lambda: not demo.state_holder.session_data, timeout=30)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = grown_bytes(before, after)
        return {"cleanup": cleanup, "sessions": n, "kb_left_per_session": round(grown / n / 1024, 1),
                "gradio_session_records": len(demo.state_holder.session_data),
                "image_files_left": len(app.service.store.files()), "live_conversations": len(app.service.sessions)}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'run':<26}{'KB left/session':>16}{'Gradio records':>16}{'image files':>13}{'live convs':>12}")
    for r in rows:
        name = "with our cleanup" if r["cleanup"] else "Gradio default handling"
        print(f"{name:<26}{r['kb_left_per_session']:>16}{r['gradio_session_records']:>16}{r['image_files_left']:>13}"
              f"{r['live_conversations']:>12}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m llava_app.benchmarks.sessions_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40, help="API sessions per run")
    parser.add_argument("--ttl", type=float, default=2.0, help="session time-to-live in seconds")
    parser.add_argument("--warmup", type=int, default=10, help="sessions before measuring (first-use costs)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds to wait after the sessions ended (default: the time-to-live plus 4)")
    parser.add_argument("--out", default="artifacts/sessions_memory.json", help="where to write the JSON results")
    args = parser.parse_args(argv)
    quiet_environment()
    rows = [run(args.sessions, cleanup, args.ttl, args.warmup, args.settle) for cleanup in (False, True)]
    print_table(rows)
    write_json(args.out, rows, indent=2)
    return rows


if __name__ == "__main__":
    main()
