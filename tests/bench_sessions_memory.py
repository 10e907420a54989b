"""Memory left behind by API sessions that came and went, with and without our cleanup.

Runs the app on the tiny model; after a warm-up wave, N clients each upload an image, ask
once and close, and the run waits past the session time-to-live. Measures what stays allocated (tracemalloc), how
many session records Gradio still holds, and how many image files stay on disk: once with
the app as built, once with the hand-over to Gradio switched off (Gradio's own behaviour).
Prints a table and writes JSON to bench/out/sessions_memory.json.

    python tests/bench_sessions_memory.py --sessions 40
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def run(n: int, cleanup: bool, ttl: float) -> dict:
    from gradio_client import Client, handle_file

    from conftest import make_image
    from hardening import wait_until
    from llava_app.config import Config

    data = tempfile.mkdtemp(prefix="bench-sessions-")
    config = Config(model="tiny-random", device="cpu", data_dir=data, max_new_tokens=2, session_ttl=ttl)
    with launched_app(config) as (url, app, demo):
        if not cleanup:  # leave Gradio's per-session records to Gradio
            app.service.sessions.on_client_gone.__self__._drop_now = lambda session_hash: None

        def wave(count: int, tag: str) -> None:
            for i in range(count):
                image = Path(data) / f"{tag}{i}.png"
                image.write_bytes(make_image((i * 5 % 256, 80, 160), (48, 40)))
                client = Client(url, verbose=False)
                client.predict("what is it?", [handle_file(str(image))], api_name="/chat")
                client.close()
            wait_until(lambda: len(app.service.sessions) == 0, timeout=ttl * 4 + 30)
            time.sleep(ttl + 4)  # sweeps and Gradio's own expiry
            gc.collect()

        wave(10, "warm")  # first-use allocations (caches, pools) are not per-session costs
        tracemalloc.start(8)
        before = tracemalloc.take_snapshot()
        wave(n, "s")
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # The clients run in this process too: leave their HTTP buffers out of the server's count.
        client_side = [tracemalloc.Filter(False, f"*{name}*", all_frames=True) for name in
                       ("httpcore", "httpx", "gradio_client", "urllib", "tracemalloc")]
        diffs = after.filter_traces(client_side).compare_to(before.filter_traces(client_side), "traceback")
        grown = sum(s.size_diff for s in diffs)
        if os.environ.get("BENCH_VERBOSE"):
            for st in diffs[:8]:
                print(st.size_diff // 1024, "KB", st.count_diff, "|", " <- ".join(
                    f"{Path(f.filename).name}:{f.lineno}" for f in list(st.traceback)[::-1][:4]))
        return {"cleanup": cleanup, "sessions": n, "kb_left_per_session": round(grown / n / 1024, 1),
                "gradio_session_records": len(demo.state_holder.session_data),
                "image_files_left": len(app.service.store.files()), "live_conversations": len(app.service.sessions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40, help="API sessions per run")
    parser.add_argument("--ttl", type=float, default=2.0, help="session time-to-live in seconds")
    args = parser.parse_args()
    os.environ.setdefault("LLAVA_APP_CACHE", "/work/cache")
    rows = [run(args.sessions, cleanup, args.ttl) for cleanup in (False, True)]
    print(f"\n{'run':<26}{'KB left/session':>16}{'Gradio records':>16}{'image files':>13}{'live convs':>12}")
    for r in rows:
        name = "with our cleanup" if r["cleanup"] else "Gradio default handling"
        print(f"{name:<26}{r['kb_left_per_session']:>16}{r['gradio_session_records']:>16}{r['image_files_left']:>13}"
              f"{r['live_conversations']:>12}")
    out = ROOT / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sessions_memory.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
