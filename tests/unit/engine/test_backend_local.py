"""The local transformers engine on tiny random models of each supported family."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from conftest import TINY_FAMILIES
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.engine.base import ChatRequest, GenerationParams, PromptInfo, TextDelta, Usage
from llava_app.engine.local.backend import template_messages
from llava_app.errors import UserError

GREEDY = GenerationParams(temperature=0.0, max_new_tokens=12)


def conversation_with(backend, colors_sizes, question="Compare Image 1 and Image 2") -> Conversation:
    conv = Conversation()
    for color, size in colors_sizes:
        stored = backend.images.put(Image.new("RGB", size, color))
        conv.add_image(stored.sha256, stored.path, stored.width, stored.height)
    conv.ask(question)
    return conv


@dataclass
class Streamed:
    """What one ``stream`` call sent besides the text: its prompt and its usage."""

    info: PromptInfo
    usage: Usage
    events: list


def run(backend, conv, params=GREEDY, system="You describe images."):
    request = ChatRequest(conv.messages(system), params, session_id=conv.id)
    events = list(backend.stream(request))
    chunks = [e.text for e in events if isinstance(e, TextDelta)]
    return chunks, Streamed(events[0].info, events[-1], events)


def independent_inputs(backend, conv, system="You describe images."):
    """What the processor itself makes of the conversation (not through the engine)."""
    proc = backend.processor
    msgs = conv.messages(system)
    text = proc.apply_chat_template(template_messages(msgs), add_generation_prompt=True, tokenize=False)
    images = [Image.open(p["ref"].path).convert("RGB") for m in msgs for p in m["content"] if p["type"] == "image"]
    return proc(text=text, images=images or None, return_tensors="pt")


@pytest.fixture(params=TINY_FAMILIES)
def backend(request, local_backend):
    return local_backend(request.param)


def image_token_count(backend, input_ids) -> int:
    return int((input_ids == backend.model.config.image_token_id).sum())


def test_multi_image_first_turn_counts_match_the_processor(backend):
    conv = conversation_with(backend, [("red", (64, 48)), ("blue", (40, 90))])
    chunks, streamed = run(backend, conv)
    assert "".join(chunks).strip()
    reference = independent_inputs(backend, conv)
    assert streamed.info.n_tokens == reference["input_ids"].shape[1]
    assert streamed.info.n_images == 2 and streamed.info.image_labels == ["Image 1", "Image 2"]
    assert streamed.info.text.count(backend.processor.image_token) == 2
    assert image_token_count(backend, reference["input_ids"]) >= 2 * 16  # every image expanded to its tokens


def test_text_only_follow_up_still_sees_both_images(backend):
    conv = conversation_with(backend, [("red", (64, 48)), ("blue", (40, 90))])
    chunks, first = run(backend, conv)
    conv.answer("".join(chunks))
    conv.ask("Which one is darker?")
    chunks, second = run(backend, conv)
    assert second.info.n_images == 2
    reference = independent_inputs(backend, conv)
    assert second.info.n_tokens == reference["input_ids"].shape[1] > first.info.n_tokens
    # The same image tokens as in turn one: both images are still in the model's input.
    first_conv_ids = independent_inputs(backend, conversation_with(backend, [("red", (64, 48)), ("blue", (40, 90))]))
    assert image_token_count(backend, reference["input_ids"]) == image_token_count(backend, first_conv_ids["input_ids"])


def test_streamed_chunks_join_to_the_non_streamed_greedy_answer(backend):
    import torch

    conv = conversation_with(backend, [("green", (50, 50)), ("yellow", (90, 30))])
    chunks, _ = run(backend, conv, GenerationParams(temperature=0.0, max_new_tokens=20))
    assert len(chunks) > 5, "the answer should arrive in several chunks"
    inputs = independent_inputs(backend, conv)
    with torch.no_grad():
        out = backend.model.generate(**inputs, do_sample=False, max_new_tokens=20)
    expected = backend.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "".join(chunks).strip() == expected.strip()


def test_the_answer_depends_on_the_images(backend):
    a = "".join(run(backend, conversation_with(backend, [("red", (64, 48))], "What is this?"))[0])
    b = "".join(run(backend, conversation_with(backend, [("navy", (48, 64))], "What is this?"))[0])
    assert a != b


def test_sampling_parameters_are_used(backend):
    conv = conversation_with(backend, [("red", (64, 48))], "Describe it")
    params = GenerationParams(temperature=1.5, top_p=0.95, max_new_tokens=16)
    answers = {"".join(run(backend, conv, params)[0]) for _ in range(3)}
    assert len(answers) > 1, "temperature > 0 should sample different answers"


def test_stop_ends_the_model_thread_within_a_couple_of_steps(local_backend):
    backend = local_backend("tiny-random", stream_delay=0.01)
    conv = conversation_with(backend, [("red", (64, 48))], "Tell me everything")
    request = ChatRequest(conv.messages(), GenerationParams(max_new_tokens=5000), session_id=conv.id)
    received, after_cancel = 0, 0
    started = time.monotonic()
    events = []
    for event in backend.stream(request):
        events.append(event)
        if not isinstance(event, TextDelta):
            continue
        if request.cancel.is_set():
            after_cancel += 1
        received += 1
        if received == 5:
            request.cancel.set()
    assert after_cancel <= 2
    assert isinstance(events[-1], Usage) and events[-1].finish_reason == "cancelled"
    assert 5 <= events[-1].completion_tokens < 5000
    assert time.monotonic() - started < 10
    assert not [t for t in threading.enumerate() if t.name == "llava-generate" and t.is_alive()]
    # The model is free: the next question starts at once.
    conv.answer("stopped", stopped=True)
    conv.ask("next")
    t0 = time.monotonic()
    events = iter(backend.stream(ChatRequest(conv.messages(), GREEDY, session_id=conv.id)))
    first = next(e for e in events if isinstance(e, TextDelta))
    assert first.text and time.monotonic() - t0 < 5


def test_a_consumer_that_goes_away_frees_the_model(local_backend):
    backend = local_backend("tiny-random", stream_delay=0.01)
    conv = conversation_with(backend, [("red", (64, 48))], "Tell me everything")
    stream = backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=5000)))
    next(stream)
    stream.close()  # e.g. the request was dropped
    assert backend._lock.acquire(timeout=5), "the model lock was not released"
    backend._lock.release()


@pytest.mark.parametrize("error", [MemoryError(), type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")])
def test_out_of_memory_becomes_a_clear_message_and_the_next_request_works(local_backend, monkeypatch, error):
    backend = local_backend("tiny-random")
    conv = conversation_with(backend, [("red", (64, 48))], "Describe")

    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(backend.model, "generate", explode)
    with pytest.raises(UserError, match="ran out of memory.*fewer images"):
        run(backend, conv)
    monkeypatch.undo()
    assert "".join(run(backend, conv)[0]).strip()


def test_placeholder_tokens_typed_by_the_user_do_not_become_image_slots(backend):
    conv = conversation_with(backend, [("red", (64, 48))], "What is <image> and <video> here?")
    chunks, streamed = run(backend, conv)
    assert "".join(chunks).strip()
    assert streamed.info.n_images == 1
    assert streamed.info.text.count(backend.processor.image_token) == 1
    assert "< image>" in streamed.info.text


@pytest.mark.parametrize("preset", ["tiny-faithful-llava", "tiny-faithful-interleave"])
def test_streamed_chunks_of_real_tokenizers_join_to_the_non_streamed_greedy_answer(local_backend, preset):
    """The streamer's pieces under SentencePiece (leading spaces) and byte-level BPE, on the model's own answer."""
    test_streamed_chunks_join_to_the_non_streamed_greedy_answer(local_backend(preset))
