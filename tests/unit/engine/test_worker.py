"""The local engine in a process of its own (engine/local/worker.py): the same answers as in the app's process,
decoded together; Stop crosses the pipe within a step or two; errors arrive as the project's own; a
child that dies ends the waiting answers with a clear message and leaves the app running; the config
picks it when told to, and a model switch starts a new process and ends the old one."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest
from test_batching import Answer, alone, conversations, stop_after_pieces, wait_for

from llava_app.config import Config, parse_config
from llava_app.engine.base import GenerationParams, PromptReady, Queued, TextDelta, Usage
from llava_app.errors import EngineError, ModelNotFoundError

PARAMS = GenerationParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def engine_process(tiny_cache, backend_images):
    from llava_app.engine.local.worker import EngineProcess

    engine = EngineProcess({"model": "tiny-random", "device": "cpu", "stream_delay": 0.01},
                           backend_images)
    yield engine
    engine.close()


def test_answers_from_the_process_are_the_answers_in_process_decoded_together(engine_process, local_backend):
    here = local_backend("tiny-random")
    assert engine_process.max_concurrency == here.max_concurrency == 4
    facts = (engine_process.model_name, engine_process.is_random, engine_process.counts_tokens)
    assert facts == ("tiny-random", True, True)
    assert engine_process.context_length == here.context_length
    convs = conversations(here)  # the same image store folder: the child opens the same files
    assert [engine_process.count_tokens(c.messages()) for c in convs] == \
        [here.count_tokens(c.messages()) for c in convs]
    assert engine_process.image_resolution() == here.image_resolution()
    solo = [alone(here, c, PARAMS) for c in convs]
    answers = [Answer(engine_process, c, PARAMS, session=False).start() for c in convs]
    answers = [a.join() for a in answers]
    assert not [a.error for a in answers if a.error]
    assert [a.text for a in answers] == solo
    kinds = [type(e) for e in answers[0].events]
    assert kinds[0] is PromptReady and kinds[-1] is Usage and TextDelta in kinds
    assert all(a.usage.completion_tokens == PARAMS.max_new_tokens for a in answers)


def test_stopping_one_of_four_through_the_pipe_ends_it_within_two_steps(engine_process, local_backend):
    convs = conversations(local_backend("tiny-random"))
    params = GenerationParams(max_new_tokens=80)
    # the victim's reader falls behind the child, so pieces wait in the pipe when Stop is pressed
    answers = [Answer(engine_process, c, params, session=False, lag=0.05 * (i == 2)).start()
               for i, c in enumerate(convs)]
    victim = answers[2]
    held = stop_after_pieces(victim, 5, timeout=60)
    for a in answers:
        a.join()
    assert len(victim.pieces) - held <= 2  # the piece in flight at most: what the child made meanwhile is dropped
    assert victim.usage.finish_reason == "cancelled" and victim.usage.completion_tokens < 80
    assert all(a.usage.finish_reason == "length" for a in answers if a is not victim)


def test_stopping_an_answer_waiting_in_line_ends_it_though_no_event_crosses_the_pipe(engine_process, local_backend):
    """A fifth answer waits for a row: after its place, nothing comes through the pipe for it, so the reader
    sees its Stop by its timeout (``CANCEL_POLL_S``), not after the next event (that would be once a row frees)."""
    convs = conversations(local_backend("tiny-random"), n=5)
    running = [Answer(engine_process, c, GenerationParams(max_new_tokens=200), session=False).start()
               for c in convs[:4]]
    for a in running:
        assert a.first_text.wait(60)
    waiting = Answer(engine_process, convs[4], PARAMS, session=False).start()
    wait_for(lambda: Queued(1) in waiting.events)
    stopped = time.monotonic()
    waiting.request.cancel.set()
    waiting.thread.join(30)
    took = time.monotonic() - stopped
    assert not waiting.thread.is_alive() and waiting.error is None and not waiting.pieces
    assert any(a.thread.is_alive() for a in running), f"it ended only once the batch had ({took:.2f} s)"
    assert took < 1.5
    # The four go on writing (stopped then, rather than waited for to the end: on a loaded machine the
    # niced model process may take minutes for 4 x 200 tokens).
    had = [len(a.pieces) for a in running]
    wait_for(lambda: all(len(a.pieces) >= n + 3 or not a.thread.is_alive() for a, n in zip(running, had,
                                                                                               strict=True)), 60)
    for a in running:
        a.request.cancel.set()
        a.join()
    assert all(a.error is None and a.usage.finish_reason in ("length", "cancelled") for a in running)


def test_a_failure_in_the_child_arrives_as_a_clear_error_and_the_engine_goes_on(engine_process, local_backend):
    broken = [{"role": "user", "content": [{"type": "image", "ref": None}, {"type": "text", "text": "hi"}]}]
    with pytest.raises(EngineError, match="The model process failed"):
        engine_process.count_tokens(broken)
    conv = conversations(local_backend("tiny-random"), n=1)[0]
    assert engine_process.count_tokens(conv.messages()) > 0


def test_a_model_that_cannot_load_is_refused_where_the_engine_is_made(tmp_path):
    from llava_app.engine.local.worker import EngineProcess

    with pytest.raises(ModelNotFoundError):
        EngineProcess({"model": str(tmp_path / "no-such-model"), "device": "cpu"}, tmp_path / "images")


def test_the_config_runs_the_local_engine_in_its_own_process_when_told_to(tiny_cache, store):
    from llava_app.engine import make_app_backend, make_backend
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.engine.local.worker import EngineProcess

    assert not Config().engine_process and parse_config(["--engine-process"]).engine_process
    config = Config(model="tiny-random", device="cpu", allowed_models="tiny-random-llava-onevision",
                    model_switching="everyone", engine_process=True)
    here = make_backend(dataclasses.replace(config, engine_process=False), store)
    try:
        assert isinstance(here, LocalBackend)
    finally:
        here.close()
    backend = make_app_backend(config, store)
    try:
        first = backend.engine
        assert isinstance(first, EngineProcess) and first.process.is_alive()
        assert backend.switch("tiny-random-llava-onevision")
        assert isinstance(backend.engine, EngineProcess) and backend.engine.model_name == "tiny-random-llava-onevision"
        assert not first.process.is_alive(), "the old model's process should have ended"
        conv = conversations(LocalBackendImages(store), n=1)[0]
        answer = Answer(backend, conv, GenerationParams(max_new_tokens=6), session=False).start().join()
        assert answer.error is None and answer.usage.completion_tokens == 6
    finally:
        backend.close()


class LocalBackendImages:
    """What ``conversations`` needs of a backend: its image store."""

    def __init__(self, store):
        self.images = store


def test_a_child_that_dies_ends_the_waiting_answer_with_a_message(engine_process, local_backend):
    """Last in the module: it kills the module's engine process."""
    conv = conversations(local_backend("tiny-random"), n=1)[0]
    answer = Answer(engine_process, conv, GenerationParams(max_new_tokens=400), session=False).start()
    assert answer.first_text.wait(60)
    os.kill(engine_process.process.pid, signal.SIGKILL)
    answer.join()
    assert isinstance(answer.error, EngineError) and "stopped" in str(answer.error)
    with pytest.raises(EngineError, match="restart the app"):
        engine_process.count_tokens(conv.messages())
