"""The backend contract on the local engine: typed events, exact counts, failures that reach the
consumer promptly, one tokenizer lock, and the transformers internals checked at start-up."""

from __future__ import annotations

import logging
import threading
import time

from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.engine.base import ChatRequest, GenerationParams, PromptReady, TextDelta, Usage
from llava_app.errors import EngineError

DEADLINE_S = 10  # a failure must reach the consumer well within this (a hang would never end)


def conversation(backend, question="Describe Image 1 in detail", colors=("red",)) -> Conversation:
    conv = Conversation()
    for color in colors:
        stored = backend.images.put(Image.new("RGB", (64, 48), color))
        conv.add_image(stored.sha256, stored.path, stored.width, stored.height)
    conv.ask(question)
    return conv


def consume_with_deadline(events, deadline=DEADLINE_S):
    """Drain ``events`` in a thread; returns (events seen, exception raised, seconds), never hangs the test."""
    seen, raised = [], []

    def drain():
        try:
            for event in events:
                seen.append(event)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            raised.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"the consumer still waits after {deadline} s: the stream hangs"
    return seen, (raised[0] if raised else None), time.monotonic() - started


def test_stream_yields_prompt_then_text_then_usage_and_counts_match_generate(local_backend):
    import torch

    backend = local_backend("tiny-random")
    conv = conversation(backend, colors=("red", "blue"))
    msgs = conv.messages("You describe images.")
    events = list(backend.stream(ChatRequest(msgs, GenerationParams(max_new_tokens=10), session_id=conv.id)))
    kinds = [type(e) for e in events]
    assert kinds[0] is PromptReady and kinds.count(PromptReady) == 1
    assert kinds[-1] is Usage and kinds.count(Usage) == 1
    assert set(kinds[1:-1]) == {TextDelta}
    info, usage = events[0].info, events[-1]
    assert backend.count_tokens(msgs) == info.n_tokens == usage.prompt_tokens
    # The engine's completion count is the number of new tokens generate made (independently run here).
    inputs, _ = backend.encode(msgs)
    with torch.no_grad():
        out = backend.model.generate(**inputs, do_sample=False, max_new_tokens=10)
    assert usage.completion_tokens == out.shape[1] - inputs["input_ids"].shape[1] == 10
    assert usage.finish_reason == "length"
    # A fresh session: every prompt token was computed and both images went through the vision tower.
    assert usage.prefilled_tokens == usage.prompt_tokens and usage.images_encoded + usage.images_cached == 2


def test_a_follow_up_reports_its_reused_prefix_and_cached_images(local_backend):
    backend = local_backend("tiny-random")
    conv = conversation(backend, colors=("green",))
    request = ChatRequest(conv.messages(), GenerationParams(max_new_tokens=6), session_id=conv.id)
    events = list(backend.stream(request))
    conv.answer("".join(e.text for e in events if isinstance(e, TextDelta)))
    conv.ask("And the colour?")
    second = list(backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=6), session_id=conv.id)))
    usage = second[-1]
    assert usage.prefilled_tokens < usage.prompt_tokens // 2  # only the new turn was read
    assert usage.images_encoded == 0 and usage.images_cached == 1


def test_an_exception_inside_generate_reaches_the_consumer_promptly(local_backend, monkeypatch):
    backend = local_backend("tiny-random")
    conv = conversation(backend)
    forward, calls = backend.model.forward, []

    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:  # a few tokens in
            raise RuntimeError("boom in the decode loop")
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", failing_forward)
    stream = backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=50), session_id=conv.id))
    seen, raised, seconds = consume_with_deadline(stream)
    assert isinstance(raised, EngineError) and "boom in the decode loop" in str(raised)
    assert isinstance(seen[0], PromptReady) and not any(isinstance(e, Usage) for e in seen)
    monkeypatch.undo()
    assert list(backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=4))))[-1].completion_tokens


def test_a_failure_in_the_streamers_decoding_does_not_hang_the_consumer(local_backend, monkeypatch):
    """The decode fails inside generate's thread, and again when the streamer is ended: without a
    timeout on the streamer's queue the consumer would wait for ever."""
    backend = local_backend("tiny-random")
    conv = conversation(backend)
    tokenizer = backend.processor.tokenizer
    decode, calls = tokenizer.decode, []

    def failing_decode(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("Already borrowed")
        return decode(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "decode", failing_decode)
    stream = backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=40), session_id=conv.id))
    _, raised, seconds = consume_with_deadline(stream)
    assert isinstance(raised, EngineError) and "Already borrowed" in str(raised)
    assert seconds < 5


def test_tokenizer_use_is_serialised_by_the_engine_lock(local_backend):
    """Counting (the page's meter, /v1, context fitting) and the streamer's decoding all wait for the lock."""
    backend = local_backend("tiny-random", stream_delay=0.01)
    conv = conversation(backend)
    msgs = conv.messages()
    counted: list[int] = []
    with backend.tokenizer_lock:
        counter = threading.Thread(target=lambda: counted.append(backend.count_tokens(msgs)), daemon=True)
        counter.start()
        counter.join(0.5)
        assert counter.is_alive() and not counted  # waits for the lock
    counter.join(5)
    assert counted == [backend.count_tokens(msgs)]

    texts: list[str] = []
    request = ChatRequest(msgs, GenerationParams(max_new_tokens=400), session_id="lock-test")
    consumer = threading.Thread(target=lambda: texts.extend(e.text for e in backend.stream(request)
                                                            if isinstance(e, TextDelta)), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 10
    while not texts and time.monotonic() < deadline:
        time.sleep(0.01)
    assert texts, "no text arrived"
    with backend.tokenizer_lock:
        time.sleep(0.3)  # let a decode that was already under way finish
        held = len(texts)
        time.sleep(0.5)
        assert len(texts) == held  # the streamer's decoding waits for the lock too
    time.sleep(0.3)
    request.cancel.set()
    consumer.join(10)
    assert len(texts) > held


def test_counting_from_many_threads_while_an_answer_streams(local_backend):
    """The page's prompt panel, /v1 and context fitting count from their own threads during a decode."""
    backend = local_backend("tiny-random-llava-next", stream_delay=0.002)
    convs = [conversation(backend, f"Question {i}: what is in Image 1?", colors=(c,))
             for i, c in enumerate(("red", "navy", "olive", "teal"))]
    expected = [backend.count_tokens(c.messages()) for c in convs]
    errors: list[BaseException] = []
    results: list[tuple[int, int]] = []

    def count(i: int) -> None:
        try:
            for _ in range(15):
                results.append((i, backend.count_tokens(convs[i].messages())))
                results.append((i, backend.prompt_info(convs[i].messages()).n_tokens))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    request = ChatRequest(convs[0].messages(), GenerationParams(max_new_tokens=80), session_id="many")
    threads = [threading.Thread(target=count, args=(i % 4,)) for i in range(6)]
    streamer = threading.Thread(target=lambda: results.append((-1, sum(isinstance(e, TextDelta)
                                                                       for e in backend.stream(request)))))
    for t in [streamer, *threads]:
        t.start()
    for t in [streamer, *threads]:
        t.join(60)
    assert not errors, errors
    assert all(n == expected[i] for i, n in results if i >= 0) and len(results) == 6 * 30 + 1
    assert [n for i, n in results if i == -1][0] > 5


def test_without_the_private_processor_member_prefix_reuse_is_off_with_one_warning(tiny_model_path, store,
                                                                                    monkeypatch, caplog):
    from llava_app.engine.local import compat
    from llava_app.engine.local.backend import LocalBackend

    # A transformers release that renamed the private member (the processor's own call keeps working).
    monkeypatch.setattr(compat, "LAYOUT_MEMBERS", ("_merge_kwargs_renamed", *compat.LAYOUT_MEMBERS[1:]))
    monkeypatch.setattr(compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="llava_app.engine.local.compat"):
        first = LocalBackend("tiny-random", store, device="cpu")
        LocalBackend("tiny-random", store, device="cpu")
    warnings = [r for r in caplog.records if r.name == "llava_app.engine.local.compat"]
    assert len(warnings) == 1 and "_merge_kwargs_renamed" in warnings[0].getMessage()
    assert not first.reuse.layout_ok and not first.reuse.reuse_kv
    conv = conversation(first)
    msgs = conv.messages()
    events = list(first.stream(ChatRequest(msgs, GenerationParams(max_new_tokens=5), session_id=conv.id)))
    # Still exact: the count is the processor's own, and the answer is generated from the whole prompt.
    assert first.count_tokens(msgs) == first.encode(msgs)[0]["input_ids"].shape[1] == events[-1].prompt_tokens
    assert events[-1].prefilled_tokens == events[-1].prompt_tokens and events[-1].completion_tokens == 5


def test_with_the_member_present_prefix_reuse_is_on_and_nothing_is_logged(local_backend, caplog):
    from llava_app.engine.local import compat

    backend = local_backend("tiny-random")
    with caplog.at_level(logging.WARNING, logger="llava_app.engine.local.compat"):
        kwargs = compat.processing_kwargs(backend.processor)
    assert kwargs is not None and set(kwargs) == {"text", "images"} and backend.reuse.layout_ok
    assert not [r for r in caplog.records if r.name == "llava_app.engine.local.compat"]
