"""Faults: Stop, closed tabs, out of memory, a full queue, sessions that end."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest
from conftest import launched_app
from gradio_client import Client, handle_file
from hardening import TabClient, cpu_rate, generation_threads, wait_until

from llava_app.chat.conversation import Conversation
from llava_app.config import Config
from llava_app.faults import OutOfMemory


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory, tiny_cache, local_backend):
    """An app whose answers run long (2000 tokens at full speed) unless stopped."""
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path_factory.mktemp("busy")),
                    max_new_tokens=2000)
    with launched_app(config, local_backend()) as (url, app, demo):
        yield url, app


def _assert_idle_soon(what: str) -> float:
    """The generation ends (well under a second on a quiet machine; a loaded one is given room) and the
    server's own CPU use falls; returns that use, in cores."""
    gone = wait_until(lambda: not generation_threads(), timeout=15)
    assert gone is not None, f"{what}: the generation threads are still running: {generation_threads()}"
    idle = cpu_rate(1.0)
    assert idle < 0.2, f"{what}: the server still uses {idle:.2f} cores after the generation ended"
    return idle


def _assert_next_request_starts(url: str, client: Client | None = None) -> None:
    """The queue moved on: a new question starts streaming at once (then it is cancelled)."""
    job = (client or Client(url, verbose=False)).submit("next one", [], api_name="/chat")
    waited = wait_until(lambda: len(job.outputs()) >= 1, timeout=30)
    job.cancel()
    assert waited is not None, "the next request was not answered"
    assert waited < 10, f"the next request waited {waited:.1f} s"
    assert wait_until(lambda: not generation_threads(), timeout=10) is not None


def _spy(monkeypatch, obj, name):
    """Record the first argument of every call to ``obj.name`` (the call itself goes through)."""
    calls = []
    real = getattr(obj, name)

    def recording(*args, **kwargs):
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, recording)
    return calls


def test_closed_tab_ends_the_generation_thread_and_cpu_falls_to_idle(busy_server, monkeypatch):
    url, app = busy_server
    stops = _spy(monkeypatch, app.service, "stop")
    tab = TabClient(url, "chat", ["Tell me a very long story", [], [], [], None])  # message, files, urls, regions
    tab.wait_generating(5)
    assert generation_threads() == ["llava-generate", "llava-stream"]
    busy = cpu_rate(0.5)  # this process's own CPU: less on a machine others load, but clearly above idle
    tab.close()  # no /cancel: the connection just drops, as when a tab closes
    idle = _assert_idle_soon("closed tab")
    assert busy > 3 * idle, f"the generation used {busy:.2f} cores, after the close {idle:.2f}"
    # Gradio noticed the dropped stream, closed our event generator, and iterate_in_thread's
    # on_cancel set the conversation's cancel flag: that is what ended the decode loop.
    assert len(stops) == 1 and isinstance(stops[0], Conversation)
    _assert_next_request_starts(url)


def test_stop_ends_the_generation_thread_and_keeps_the_partial_answer(busy_server):
    url, app = busy_server
    client = Client(url, verbose=False)
    job = client.submit("Tell me a very long story", [], api_name="/chat")
    assert wait_until(lambda: len(job.outputs()) >= 3, timeout=60) is not None, "the answer did not stream"
    conv = next(c for c in app.service.sessions.live() if c.turns and c.turns[-1].assistant is None)
    assert app.service.stop(conv)  # what the page's Stop button calls
    _assert_idle_soon("Stop")
    answer = job.result(timeout=10)
    ctx = client.predict(api_name="/context")
    assert ctx["turns"][-1]["stopped"] is True and ctx["turns"][-1]["assistant"] == answer
    _assert_next_request_starts(url, client)  # the same client goes on


def test_api_cancel_frees_the_model_for_the_next_client(busy_server):
    url, _ = busy_server
    job = Client(url, verbose=False).submit("Tell me a very long story", [], api_name="/chat")
    assert wait_until(lambda: len(job.outputs()) >= 3, timeout=60) is not None
    job.cancel()
    _assert_idle_soon("API cancel")
    _assert_next_request_starts(url)


# ----- out of memory -----------------------------------------------------------------------------
def _fail_generate_once(monkeypatch, backend, make_error, holder: list):
    """The model's generate raises ``make_error()`` on its next call, holding a big tensor as a real OOM would."""
    import torch

    real = backend.model.generate
    state = {"armed": True}

    def generate(*args, **kwargs):
        if state["armed"]:
            state["armed"] = False
            activations = torch.ones(4_000_000)  # 16 MB the failed step was holding
            holder.append(weakref.ref(activations))
            raise make_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", generate)


def _cuda_oom():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("make_error", [MemoryError, _cuda_oom], ids=["MemoryError", "torch.OutOfMemoryError"])
def test_out_of_memory_releases_memory_before_the_user_hears_of_it(make_error, local_backend, store, image_files,
                                                                 monkeypatch):
    from llava_app.chat.service import ChatService
    from llava_app.engine.base import GenerationParams

    backend = local_backend()
    monkeypatch.setattr(backend, "images", store)
    service = ChatService(backend, store)
    conv = Conversation()
    service.add_images(conv, [(str(image_files[0]), "a.png")])
    held: list = []
    _fail_generate_once(monkeypatch, backend, make_error, held)
    service.ask(conv, "What is this?")
    with pytest.raises(OutOfMemory, match="fewer images, a shorter answer") as err:
        list(service.stream_answer(conv, GenerationParams(max_new_tokens=4)))
    gc.collect()
    # The error is still alive here (a UI would show it now), yet the failed step's tensors are gone.
    assert err.value is not None and held[0]() is None, "the failed generation's tensors are still referenced"
    assert conv.turns == [] and len(conv.pending_images) == 1  # the question was taken back; the image waits
    service.ask(conv, "What is this?")
    assert list(service.stream_answer(conv, GenerationParams(max_new_tokens=4)))[-1].strip()


@pytest.mark.parametrize("make_error", [MemoryError, _cuda_oom], ids=["MemoryError", "torch.OutOfMemoryError"])
def test_out_of_memory_through_the_api_keeps_the_conversation(make_error, tmp_path, local_backend, image_files,
                                                            monkeypatch):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=8)
    backend = local_backend()
    with launched_app(config, backend) as (url, app, demo):
        client = Client(url, verbose=False)
        first = client.predict("Describe Image 1", [handle_file(str(image_files[0]))], api_name="/chat")
        _fail_generate_once(monkeypatch, backend, make_error, [])
        with pytest.raises(Exception, match="ran out of memory.*fewer images, a shorter answer"):
            client.predict("Compare it with Image 2", [handle_file(str(image_files[1]))], api_name="/chat")
        ctx = client.predict(api_name="/context")
        assert [t["user"] for t in ctx["turns"]] == ["Describe Image 1"] and ctx["turns"][0]["assistant"] == first
        assert [im["label"] for im in ctx["images"]] == ["Image 1", "Image 2"]
        assert ctx["pending_images"] == ["Image 2"]  # goes with the next question
        again = client.predict("Compare it with Image 2", [], api_name="/chat")
        assert again.strip()
        ctx = client.predict(api_name="/context")
        assert ctx["prompt_image_labels"] == ["Image 1", "Image 2"] and len(ctx["turns"]) == 2


# ----- a full queue --------------------------------------------------------------------------------
def test_full_queue_tells_the_client_at_once(tmp_path, local_backend):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=2000,
                    queue_size=1)
    # An engine that writes one answer at a time, so the second request waits (a batching one takes 4 first).
    with launched_app(config, local_backend(max_batch=1)) as (url, app, demo):
        running = Client(url, verbose=False).submit("long story", [], api_name="/chat")
        assert wait_until(lambda: len(running.outputs()) >= 1, timeout=60) is not None
        waiting = Client(url, verbose=False).submit("second", [], api_name="/chat")
        assert wait_until(lambda: waiting.status().code.name == "IN_QUEUE", timeout=10) is not None
        started = time.monotonic()
        with pytest.raises(Exception, match="[Qq]ueue is full"):
            Client(url, verbose=False).predict("third", [], api_name="/chat")
        assert time.monotonic() - started < 10, "the refusal should be immediate, not a hang"
        def stop_all():  # let the two accepted requests finish quickly
            for conv in app.service.sessions.live():
                app.service.stop(conv)
            return running.done() and waiting.done()

        assert wait_until(stop_all, timeout=60, step=0.2) is not None
        assert running.result() is not None and waiting.result() is not None  # both were answered


# ----- sessions that end ---------------------------------------------------------------------------
def _conversation_objects() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Conversation)


def test_idle_sessions_free_state_images_and_caches(tmp_path, local_backend, monkeypatch):
    from conftest import make_image

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=4,
                    session_ttl=2.0)
    backend = local_backend()
    forgotten = _spy(monkeypatch, backend, "forget")
    with launched_app(config, backend) as (url, app, demo):
        service = app.service
        baseline = _conversation_objects()
        ids = []
        for round_ in range(2):  # sessions come and go, two waves of four
            for i in range(4):
                path = tmp_path / f"r{round_}-{i}.png"
                path.write_bytes(make_image((40 * i % 255, 60 * round_, 90), (32 + i, 40)))
                client = Client(url, verbose=False)
                client.predict("What is it?", [handle_file(str(path))], api_name="/chat")
                conv_id = client.predict(api_name="/context")["conversation_id"]
                assert conv_id in {c.id for c in service.sessions.live()}
                assert len(service.store.files()) >= 1
                ids.append(conv_id)
            ended = wait_until(lambda: len(service.sessions) == 0, timeout=20)
            assert ended is not None, f"{len(service.sessions)} sessions still live after their time-to-live"
            assert wait_until(lambda: not service.store.files(), timeout=20) is not None, "image files stayed"
        assert set(ids) <= set(forgotten), "the engine was not told to drop some sessions' caches"
        assert not len(service.runs)
        assert wait_until(lambda: len(demo.state_holder.session_data) == 0, timeout=10) is not None, \
            "Gradio still keeps records of sessions that are gone"
        # Gradio drops expired state too, so nothing of the 8 sessions stays in memory.
        assert wait_until(lambda: _conversation_objects() <= baseline, timeout=10) is not None, \
            f"{_conversation_objects() - baseline} conversations still in memory"


def test_closed_tab_frees_its_session_at_once(tmp_path, local_backend, monkeypatch, image_files):
    import httpx

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=4)
    backend = local_backend()
    forgotten = _spy(monkeypatch, backend, "forget")
    with launched_app(config, backend) as (url, app, demo):
        client = Client(url, verbose=False)
        client.predict("What is it?", [handle_file(str(image_files[0]))], api_name="/chat")
        conv_id = client.predict(api_name="/context")["conversation_id"]
        assert len(app.service.sessions) == 1
        # A page keeps a heartbeat stream open; closing the tab drops it and Gradio runs our unload handler.
        ready = threading.Event()

        def heartbeat():
            with httpx.stream("GET", url + f"gradio_api/heartbeat/{client.session_hash}", timeout=10) as r:
                for _ in r.iter_lines():
                    ready.set()
                    return

        t = threading.Thread(target=heartbeat)
        t.start()
        assert ready.wait(10)
        t.join()
        assert wait_until(lambda: len(app.service.sessions) == 0, timeout=5) is not None
        assert conv_id in forgotten
        app.service.housekeep()  # the periodic sweep, now rather than within a minute
        # The file is younger than the sweep's grace period; it goes once that has passed.
        assert app.service.store.sweep(set(), grace_s=0) == 1 and not app.service.store.files()


def test_stream_cancel_runs_on_cancel_when_the_consumer_goes_away():
    """The mechanism under both Stop-by-tab-close paths, without a server."""
    from llava_app.web.cancellable import iterate_in_thread

    stopped = threading.Event()

    def endless():
        while not stopped.is_set():
            time.sleep(0.01)
            yield "x"

    async def consume_three():
        agen = iterate_in_thread(endless, on_cancel=stopped.set)
        n = 0
        async for _ in agen:
            n += 1
            if n == 3:
                await agen.aclose()  # what Gradio does to the event of a closed stream
                break

    asyncio.run(consume_three())
    assert stopped.is_set()
