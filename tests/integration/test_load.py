"""Load: eight API clients at once on the tiny model, each with its own images."""

from __future__ import annotations

import gc
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import launched_app, make_image
from gradio_client import Client, handle_file
from hardening import generation_threads, wait_until

from llava_app.chat.conversation import Conversation
from llava_app.config import Config

CLIENTS = 8


def test_eight_concurrent_clients_get_their_own_answers_and_nothing_leaks(tmp_path, local_backend, monkeypatch):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6,
                    session_ttl=10.0, queue_size=64)
    backend = local_backend()
    forgotten = []
    real_forget = backend.forget
    monkeypatch.setattr(backend, "forget", lambda sid: (forgotten.append(sid), real_forget(sid)))
    with launched_app(config, backend) as (url, app, demo):
        service = app.service

        def one_client(i: int) -> dict:
            own = []
            for j in range(2):  # two images each, unlike anyone else's
                p = tmp_path / f"c{i}-{j}.png"
                p.write_bytes(make_image((30 * i, 100 + 20 * j, 250 - 25 * i), (40 + i, 30 + j)))
                own.append(p)
            client = Client(url, verbose=False)
            started = time.monotonic()
            first = client.predict(f"Client {i}: compare Image 1 and Image 2", [handle_file(str(p)) for p in own],
                                   api_name="/chat")
            second = client.predict(f"Client {i}: which is brighter?", [], api_name="/chat")
            ctx = client.predict(api_name="/context")
            return dict(i=i, first=first, second=second, ctx=ctx, seconds=time.monotonic() - started)

        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(one_client, i) for i in range(CLIENTS)]
            results = [f.result(timeout=240) for f in futures]  # nobody waits forever

        hashes = [{im["sha256"] for im in r["ctx"]["images"]} for r in results]
        for r, own in zip(results, hashes, strict=False):
            assert r["first"].strip() and r["second"].strip(), f"client {r['i']} got no answer"
            assert r["ctx"]["image_count"] == 2 and len(own) == 2
            assert [t["user"] for t in r["ctx"]["turns"]] == [f"Client {r['i']}: compare Image 1 and Image 2",
                                                              f"Client {r['i']}: which is brighter?"]
            assert r["ctx"]["prompt_images"] == 2
            assert all(f"Client {r['i']}:" in t["user"] for t in r["ctx"]["turns"])
            others = set().union(*(h for h in hashes if h is not own))
            assert not own & others, f"client {r['i']} sees another client's image"
        assert len({r["ctx"]["conversation_id"] for r in results}) == CLIENTS
        slowest = max(r["seconds"] for r in results)
        print(f"\n{CLIENTS} clients x 2 questions: slowest client {slowest:.1f} s")

        # Afterwards nothing stays: sessions end after their time-to-live, their files and caches go.
        assert wait_until(lambda: len(service.sessions) == 0, timeout=30) is not None
        assert wait_until(lambda: not service.store.files(), timeout=30) is not None
        assert {r["ctx"]["conversation_id"] for r in results} <= set(forgotten)
        assert not len(service.runs) and not generation_threads()
        gc.collect()
        assert wait_until(lambda: not [o for o in gc.get_objects() if type(o) is Conversation
                                       and o.id in {r["ctx"]["conversation_id"] for r in results}],
                          timeout=10) is not None, "ended conversations are still in memory"
        # Gradio's own per-session records (state and a copy of the page config) are gone too.
        assert wait_until(lambda: not demo.state_holder.session_data, timeout=10) is not None
