"""How the service consumes an engine's events: the prompt, the text, and usage plus its own timing."""

from __future__ import annotations

import time

import pytest

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine.base import (
    Backend,
    GenerationParams,
    PromptInfo,
    PromptReady,
    Queued,
    TextDelta,
    Unsupported,
    Usage,
)


class Scripted(Backend):
    """Plays back a fixed list of events, pausing where the script says, and records each request."""

    def __init__(self, script, **attrs):
        self.script, self.requests = script, []
        for name, value in attrs.items():
            setattr(self, name, value)

    def stream(self, request):
        self.requests.append(request)
        for item in self.script:
            if isinstance(item, (int, float)):
                time.sleep(item)
            else:
                yield item


def answer(backend, store) -> Conversation:
    service, conv = ChatService(backend, store, stream_interval=0), Conversation()
    service.ask(conv, "Hello?")
    assert list(service.stream_answer(conv, GenerationParams(max_new_tokens=5)))[-1] == "one two three"
    return conv


def test_the_turn_keeps_usage_and_the_timing_the_service_measured(store):
    info = PromptInfo(text="prompt", n_tokens=17)
    backend = Scripted([PromptReady(info), 0.2, TextDelta("one"), 0.1, TextDelta(" two"), 0.1, TextDelta(" three"),
                        Usage(prompt_tokens=17, completion_tokens=3, finish_reason="length", prefilled_tokens=5,
                              images_encoded=0, images_cached=1)])
    conv = answer(backend, store)
    stats = conv.turns[-1].stats
    assert conv.last_prompt is info and conv.turns[-1].assistant == "one two three"
    assert 0.2 <= stats.ttft_s < 3.0  # measured by the service, from its own clock (a loaded machine is slower)
    assert 1 < stats.tokens_per_s < 15  # 2 tokens after the first, in about 0.2 s (less when the machine is busy)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.prefilled_tokens) == (17, 3, 5)
    assert (stats.images_encoded, stats.images_cached, stats.finish_reason) == (0, 1, "length")


def test_time_waiting_for_room_counts_as_time_in_line_not_as_time_to_first_token(store):
    """An engine with no room yet says so (``Queued``): that wait is the answer's time in line, and its first
    token is timed from when the model took it (14 s in line once showed as a 0.69 s first token)."""
    backend = Scripted([Queued(1), 0.3, Queued(1), 0.3, PromptReady(PromptInfo(text="p", n_tokens=3)), 0.05,
                        TextDelta("one two three"), Usage(prompt_tokens=3, completion_tokens=3)])
    stats = answer(backend, store).turns[-1].stats
    assert stats.queued_s >= 0.6 and stats.ttft_s < stats.queued_s
    assert 0.05 <= stats.ttft_s < 0.55  # from the last word of the line (a loaded machine is slower)


def test_a_prompt_size_known_only_at_the_end_fills_the_meter(store):
    backend = Scripted([PromptReady(PromptInfo(text="[user] Hello?")), TextDelta("one two three"),
                        Usage(prompt_tokens=42, completion_tokens=3)])
    conv = answer(backend, store)
    assert conv.last_prompt.n_tokens == 42 and conv.last_prompt.text == "[user] Hello?"


def test_without_usage_the_answer_is_kept_without_stats(store):
    conv = answer(Scripted([PromptReady(PromptInfo()), TextDelta("one two three")]), store)
    assert conv.turns[-1].assistant == "one two three" and conv.turns[-1].stats is None


def test_regenerate_clears_the_old_stats(store):
    conv = answer(Scripted([TextDelta("one two three"), Usage(prompt_tokens=1, completion_tokens=3)]), store)
    conv.regenerate()
    assert conv.turns[-1].stats is None


def test_an_engine_without_images_refuses_uploads_with_its_capability_message(store, image_files):
    service = ChatService(Scripted([], supports_images=False), store)
    result = service.add_images(Conversation(), [(str(image_files[0]), "a.png")])
    assert result.added == []
    assert [str(e) for e in result.errors] == ["a.png: This model takes no images; ask in words only."]


def test_capabilities_are_checked_in_one_place():
    from llava_app.engine.base import require

    engine = Scripted([])
    with pytest.raises(Unsupported, match="cannot count"):
        engine.count_tokens([])
    with pytest.raises(Unsupported, match="cannot load another"):
        engine.switch("other")
    with pytest.raises(ValueError, match="unknown capability"):
        require(engine, "counts_token")


def test_the_generation_thread_writes_the_answer_only_under_the_conversation_lock(store):
    """Ownership is explicit: a reader holding ``conv.lock`` never sees the answer change under it."""
    import copy
    import pickle
    import threading

    from fakes import RecordingBackend

    backend = RecordingBackend().enqueue("one", " two")
    backend.hold.clear()  # the engine pauses after its first chunk
    service, conv = ChatService(backend, store, stream_interval=0), Conversation()
    service.ask(conv, "Hello?")
    first, whole = threading.Event(), threading.Event()

    def generate():
        for text in service.stream_answer(conv, GenerationParams(max_new_tokens=5)):
            (whole if text == "one two" else first).set()

    worker = threading.Thread(target=generate)
    worker.start()
    assert first.wait(10)
    with conv.lock:  # a view being built while the answer streams
        backend.hold.set()
        assert whole.wait(10)  # the whole answer has streamed...
        worker.join(0.3)
        assert worker.is_alive() and conv.turns[-1].assistant is None  # ...and waits to write it
    worker.join(10)
    assert conv.turns[-1].assistant == "one two" and conv.turns[-1].stats.completion_tokens == 2
    # Copies (Gradio's state, saved sessions) get a lock of their own.
    for twin in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert twin == conv and twin.lock is not conv.lock and twin.lock.acquire(blocking=False)
