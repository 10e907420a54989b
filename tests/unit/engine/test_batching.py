"""Batched decoding in the local engine (batching.py, batch_kv.py), on tiny random models of every family:
answers decoded together are the answers alone, token for token; one sequence stops or joins without
disturbing the others; the KV budget holds; an out-of-memory step is retried smaller."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.engine.base import ChatRequest, GenerationParams, PromptReady, Queued, TextDelta, Usage
from llava_app.errors import UserError

FAMILIES = ["tiny-random", "tiny-random-llava-next", "tiny-random-llava-onevision", "tiny-faithful-interleave"]
COLORS = ("red", "navy", "olive", "teal")
GREEDY = GenerationParams(max_new_tokens=24)


def conversations(backend, n=4, images=1):
    convs = []
    for i in range(n):
        conv = Conversation()
        for k in range(images):
            stored = backend.images.put(Image.new("RGB", (64 + 8 * k, 48), COLORS[(i + k) % len(COLORS)]))
            conv.add_image(stored.sha256, stored.path, stored.width, stored.height)
        conv.ask(f"Describe Image 1, please ({i})")
        convs.append(conv)
    return convs


class Answer:
    """One request streamed in a thread: its text pieces, its usage, and what it raised."""

    def __init__(self, backend, conv, params=GREEDY, session=True, lag=0.0):
        self.lag = lag  # seconds the reader spends on each piece: a consumer slower than the model
        self.request = ChatRequest(conv.messages(), params, session_id=conv.id if session else "")
        self.pieces, self.usage, self.error, self.events = [], None, None, []
        self.first_text = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(backend,), daemon=True)

    def _run(self, backend):
        try:
            for event in backend.stream(self.request):
                self.events.append(event)
                if isinstance(event, TextDelta):
                    self.pieces.append(event.text)
                    self.first_text.set()
                    time.sleep(self.lag)
                elif isinstance(event, Usage):
                    self.usage = event
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def start(self):
        self.thread.start()
        return self

    def join(self):
        self.thread.join(120)
        assert not self.thread.is_alive(), "the answer never ended"
        return self


def stop_after_pieces(answer: Answer, pieces: int, timeout: float) -> int:
    """Stop ``answer`` once it has streamed ``pieces`` pieces (or ``timeout`` passed); the pieces it had then."""
    deadline = time.monotonic() + timeout
    while len(answer.pieces) < pieces and time.monotonic() < deadline:
        time.sleep(0.002)
    held = len(answer.pieces)
    answer.request.cancel.set()
    return held


def alone(backend, conv, params=GREEDY) -> str:
    return Answer(backend, conv, params, session=False).start().join().text


def together(backend, convs, params=GREEDY) -> list[Answer]:
    answers = [Answer(backend, c, params, session=False) for c in convs]
    for a in answers:
        a.start()
    return [a.join() for a in answers]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_answers_decoded_together_are_the_answers_alone(local_backend, family):
    backend = local_backend(family, stream_delay=0.002)
    assert backend.scheduler is not None and backend.max_concurrency == 4
    convs = conversations(backend)
    solo = [alone(backend, c) for c in convs]
    batched = together(backend, convs)
    assert not [a.error for a in batched if a.error]
    assert backend.scheduler.peak_rows == 4, "the four answers should have been decoded together"
    assert [a.text for a in batched] == solo
    assert all(a.usage.completion_tokens == GREEDY.max_new_tokens for a in batched)


def test_stopping_one_of_four_ends_it_within_two_steps_and_the_others_go_on(local_backend):
    backend = local_backend("tiny-random", stream_delay=0.01)
    convs = conversations(backend)
    params = GenerationParams(max_new_tokens=60)
    solo = [alone(backend, c, params) for c in convs]
    answers = [Answer(backend, c, params, session=False).start() for c in convs]
    victim = answers[1]
    held = stop_after_pieces(victim, 5, timeout=30)
    for a in answers:
        a.join()
    assert len(victim.pieces) - held <= 2
    assert victim.usage.finish_reason == "cancelled" and victim.usage.completion_tokens < 60
    others = [a for a in answers if a is not victim]
    assert not [a.error for a in others if a.error]
    assert [a.text for a in others] == [s for i, s in enumerate(solo) if i != 1]
    assert all(a.usage.finish_reason == "length" for a in others)


def test_a_request_joining_mid_decode_gets_its_answer_alone(local_backend):
    backend = local_backend("tiny-random-llava-next", stream_delay=0.01)
    convs = conversations(backend)
    params = GenerationParams(max_new_tokens=50)
    solo = [alone(backend, c, params) for c in convs]
    first = [Answer(backend, c, params, session=False).start() for c in convs[:3]]
    for a in first:
        assert a.first_text.wait(30)
    late = Answer(backend, convs[3], params, session=False).start()
    assert late.first_text.wait(30)
    assert any(a.thread.is_alive() for a in first), "the late request should join while the others decode"
    answers = [a.join() for a in [*first, late]]
    assert [a.text for a in answers] == solo


def test_each_sequence_samples_with_its_own_seed(local_backend):
    backend = local_backend("tiny-random", stream_delay=0.002)
    convs = conversations(backend)
    seeded = [GenerationParams(temperature=1.0, top_p=0.95, max_new_tokens=20, seed=s) for s in (1, 2, 3, 4)]
    solo = [alone(backend, c, p) for c, p in zip(convs, seeded, strict=False)]
    answers = [Answer(backend, c, p, session=False) for c, p in zip(convs, seeded, strict=False)]
    for a in answers:
        a.start()
    assert [a.join().text for a in answers] == solo
    again = alone(backend, convs[0], GenerationParams(temperature=1.0, top_p=0.95, max_new_tokens=20, seed=5))
    assert again != solo[0]


def test_the_kv_budget_bounds_the_batch_and_every_sequence_keeps_its_kv(local_backend):
    probe = local_backend("tiny-random", stream_delay=0.002)
    convs = conversations(probe)
    params = GenerationParams(max_new_tokens=30)
    need = probe.count_tokens(convs[0].messages()) + params.max_new_tokens + 1
    row_bytes = -(-need // 64) * 64 * probe.scheduler.kv.token_bytes
    budget = 2 * row_bytes + row_bytes // 2  # room for two rows of the batch, not three
    backend = local_backend("tiny-random", stream_delay=0.002, kv_cache_bytes=budget)
    solo = [alone(backend, c, params) for c in convs]
    answers = [Answer(backend, c, params) for c in convs]
    for a in answers:
        a.start()
    answers = [a.join() for a in answers]
    assert [a.text for a in answers] == solo
    assert backend.scheduler.peak_rows == 2
    assert backend.scheduler.peak_bytes <= budget and backend.reuse.kv.nbytes <= budget
    # Each finished sequence's KV went back to its session (as far as the budget keeps them): a
    # follow-up reads again at most its answer and its new turn, never its first prompt. (Which
    # conversation is kept depends on which finished when; with tiny-random's word-level tokenizer
    # some answers do not tokenize back to the ids written, so the reuse may stop inside the answer.)
    kept = [c for c in convs if c.id in backend.reuse.kv]
    assert kept
    conv = kept[-1]
    first_prompt = backend.count_tokens(conv.messages())
    conv.answer(answers[convs.index(conv)].text)
    conv.ask("And the colour?")
    follow = Answer(backend, conv, params).start().join()
    assert follow.usage.prefilled_tokens <= follow.usage.prompt_tokens - first_prompt


def budget_for_two_rows(local_backend, params):
    """A KV budget with room for two rows of the batch, not three (on tiny-random's prompts)."""
    probe = local_backend("tiny-random", stream_delay=0.002)
    need = probe.count_tokens(conversations(probe)[0].messages()) + params.max_new_tokens + 1
    row_bytes = -(-need // 64) * 64 * probe.scheduler.kv.token_bytes
    return 2 * row_bytes + row_bytes // 2


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_request_waiting_for_kv_room_hears_its_place_and_a_stop_there_ends_it_at_once(local_backend):
    params = GenerationParams(max_new_tokens=30)
    backend = local_backend("tiny-random", stream_delay=0.05, kv_cache_bytes=budget_for_two_rows(local_backend, params))
    convs = conversations(backend)
    solo = alone(backend, convs[2], params)
    running = [Answer(backend, c, params, session=False).start() for c in convs[:2]]
    wait_for(lambda: all(a.first_text.is_set() for a in running))
    third = Answer(backend, convs[2], params, session=False).start()
    wait_for(lambda: Queued(1) in third.events)
    fourth = Answer(backend, convs[3], params, session=False).start()
    wait_for(lambda: Queued(2) in fourth.events)
    assert not any(isinstance(e, PromptReady) for e in third.events + fourth.events), "they wait before any prefill"

    fourth.request.cancel.set()  # Stop while waiting for room: it leaves now, not once a row frees
    fourth.thread.join(5)
    assert not fourth.thread.is_alive() and all(a.thread.is_alive() for a in running)
    assert fourth.error is None and fourth.text == ""

    for a in running:
        a.join()
    third.join()
    assert third.error is None and third.text == solo
    kinds = [type(e) for e in third.events]
    assert kinds.index(Queued) < kinds.index(PromptReady) < kinds.index(TextDelta)
    assert [e for e in third.events if isinstance(e, Queued)] == [Queued(1)]  # told once: its place never changed
    assert backend.scheduler.peak_rows == 2


def test_the_page_hears_the_place_of_an_answer_waiting_for_kv_room(local_backend):
    from llava_app.chat.service import ChatService, Waiting

    params = GenerationParams(max_new_tokens=30)
    backend = local_backend("tiny-random", stream_delay=0.05, kv_cache_bytes=budget_for_two_rows(local_backend, params))
    service = ChatService(backend, backend.images, stream_interval=0.0)
    convs = conversations(backend, n=3)
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    threads = [threading.Thread(target=lambda i=i: seen[i].extend(
        service.stream_answer(convs[i], params, report_waiting=True))) for i in range(3)]
    for t in threads[:2]:
        t.start()
    wait_for(lambda: any(isinstance(x, str) and x for x in seen[0]) and any(isinstance(x, str) and x for x in seen[1]))
    threads[2].start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(x, Waiting) for x in seen[0] + seen[1])
    assert Waiting(1) in seen[2], "the line let it in (4 rows), the KV budget held it back: its place is shown"
    assert isinstance(seen[2][-1], str) and seen[2][-1].strip()
    assert seen[2].index(Waiting(1)) < next(i for i, x in enumerate(seen[2]) if isinstance(x, str))
    assert convs[2].turns[-1].assistant == seen[2][-1]


def test_out_of_memory_in_a_batched_step_retries_smaller_and_tells_only_its_user(local_backend, monkeypatch):
    import torch

    backend = local_backend("tiny-random-llava-onevision", stream_delay=0.005)
    convs = conversations(backend, n=3) + conversations(backend, n=1, images=3)  # the last one's prompt is longest
    params = GenerationParams(max_new_tokens=30)
    longest = max(backend.count_tokens(c.messages()) for c in convs[:3])
    forward = backend.model.forward

    def forward_short_of_memory(*args, **kwargs):
        rows = kwargs.get("batch_rows")
        if rows is not None and max(rows.lengths) > longest + params.max_new_tokens:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", forward_short_of_memory)
    answers = together(backend, convs, params)
    assert isinstance(answers[3].error, UserError) and "out of memory" in str(answers[3].error)
    assert not [a.error for a in answers[:3] if a.error]
    assert all(a.usage.completion_tokens == params.max_new_tokens for a in answers[:3])
    monkeypatch.undo()
    assert backend.scheduler.chunk == backend.scheduler.max_batch  # back to full steps once the batch emptied
    assert alone(backend, convs[3], params)


def test_the_line_shows_a_place_once_the_batch_is_full(local_backend):
    from llava_app.chat.service import ChatService, Waiting

    backend = local_backend("tiny-random", stream_delay=0.01, max_batch=2)
    service = ChatService(backend, backend.images, stream_interval=0.0)
    convs = []
    for i in range(3):
        conv = Conversation()
        service.ask(conv, f"Tell me a story ({i})")
        convs.append(conv)
    params = GenerationParams(max_new_tokens=40)
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    threads = [threading.Thread(target=lambda i=i: seen[i].extend(
        service.stream_answer(convs[i], params, report_waiting=True))) for i in range(3)]
    for t in threads[:2]:
        t.start()
    deadline = time.monotonic() + 30
    while not (seen[0] and seen[1]) and time.monotonic() < deadline:
        time.sleep(0.005)
    threads[2].start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(x, Waiting) for x in seen[0] + seen[1])
    assert Waiting(1) in seen[2] and isinstance(seen[2][-1], str) and seen[2][-1].strip()
    assert backend.scheduler.peak_rows == 2
