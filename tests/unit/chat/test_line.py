"""The line in front of the engine: order, places, Stop while waiting (on the recording fake)."""

from __future__ import annotations

from fakes import RecordingBackend

from llava_app.chat.conversation import Conversation
from llava_app.chat.line import Line
from llava_app.chat.service import ChatService, Waiting
from llava_app.engine.base import GenerationParams


def test_tickets_are_served_in_order_within_the_capacity():
    capacity = [1]
    line = Line(lambda: capacity[0])
    a, b, c = line.join(), line.join(), line.join()
    assert line.wait(b, 0) == 2 and line.wait(c, 0) == 3  # b is 2nd, c 3rd: a is first
    assert line.wait(a, 0) == 0  # served
    assert line.wait(b, 0) == 1 and line.wait(c, 0) == 2
    capacity[0] = 2  # a batching engine takes two at once
    assert line.wait(b, 0) == 0 and line.wait(c, 0) == 1
    line.leave(c, served=False)  # c gave up
    assert len(line) == 0
    line.leave(a, served=True)
    d = line.join()
    assert line.wait(d, 0) == 0


def test_a_second_answer_reports_its_place_then_streams_and_stop_while_waiting_takes_it_back(store):
    backend = RecordingBackend().enqueue("first", " answer").enqueue("second")
    backend.hold.clear()  # the first answer pauses after its first chunk, holding the engine
    service = ChatService(backend, store, stream_interval=0)
    one, two, three = Conversation(), Conversation(), Conversation()
    for conv in (one, two, three):
        service.ask(conv, "Hello?")
    first = iter(service.stream_answer(one, GenerationParams(max_new_tokens=4)))
    assert next(first) == "first"
    second = service.stream_answer(two, GenerationParams(max_new_tokens=4), report_waiting=True)
    assert next(second) == Waiting(1)
    third = service.stream_answer(three, GenerationParams(max_new_tokens=4), report_waiting=True)
    assert next(third) == Waiting(2)
    service.stop(three)  # Stop while waiting: no answer, the question is taken back
    assert list(third) == [] and three.turns == []
    backend.hold.set()
    assert list(first)[-1] == "first answer"
    rest = list(second)
    assert rest[-1] == "second" and all(isinstance(x, (str, Waiting)) for x in rest)
    assert two.turns[-1].assistant == "second" and len(service.line) == 0
    # Without report_waiting (the API, /v1) nothing but text comes out.
    service.ask(one, "Again?")
    assert all(isinstance(x, str) for x in service.stream_answer(one, GenerationParams(max_new_tokens=4)))


def test_the_place_in_line_passes_through_the_saving_of_a_conversation(store, tmp_path):
    """The page wraps the stream to save it as it goes: a place in line is no text to save."""
    from llava_app.chat.saved import BrowserSaves
    from llava_app.storage.saved import SavedConversations, new_browser_token

    backend = RecordingBackend().enqueue("first").enqueue("second")
    backend.hold.clear()
    service = ChatService(backend, store, stream_interval=0)
    saves = BrowserSaves(SavedConversations(tmp_path / "s.sqlite3", tmp_path / "files"), store)
    one, two = Conversation(), Conversation()
    saves.bind(two, new_browser_token())
    for conv in (one, two):
        service.ask(conv, "Hello?")
    first = service.stream_answer(one, GenerationParams(max_new_tokens=4))
    assert next(first) == "first"
    second = saves.saving(service.stream_answer(two, GenerationParams(max_new_tokens=4), report_waiting=True), two)
    assert next(second) == Waiting(1)
    backend.hold.set()
    list(first)
    assert list(second)[-1] == "second" and two.turns[-1].assistant == "second"


def test_a_full_line_refuses_a_newcomer_at_once_and_takes_the_question_back(store):
    import pytest

    from llava_app.errors import UserError

    backend = RecordingBackend().enqueue("first")
    backend.hold.clear()
    service = ChatService(backend, store, stream_interval=0, queue_size=1)
    one, two, three = Conversation(), Conversation(), Conversation()
    for conv in (one, two, three):
        service.ask(conv, "Hello?")
    first = service.stream_answer(one, GenerationParams(max_new_tokens=4))
    assert next(first) == "first"
    second = service.stream_answer(two, GenerationParams(max_new_tokens=4), report_waiting=True)
    assert next(second) == Waiting(1)
    with pytest.raises(UserError, match="queue is full"):
        next(service.stream_answer(three, GenerationParams(max_new_tokens=4)))
    assert three.turns == [] and not service.is_running(three)
    backend.hold.set()
    list(first), list(second)
