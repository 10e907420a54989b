"""The tests' gradio_client reads again when the server closed the stream under an answer still owed."""

from __future__ import annotations

import threading
from collections import deque

from client_streams import reading_again


class FakeClient:
    """What ``stream_messages`` shares with the rest of gradio_client's ``Client``."""

    def __init__(self):
        self.pending_lock = threading.Lock()
        self.pending_messages_per_event: dict[str, deque] = {}
        self.stream_open = True


def scripted(*steps):
    """A reader whose n-th read does ``steps[n]`` to the client, then ends as a ``close_stream`` ends it."""
    calls = []

    def read(client, protocol, session_hash):
        calls.append(session_hash)
        steps[len(calls) - 1](client)
        with client.pending_lock:
            client.stream_open = False

    return read, calls


def completed(event):
    return lambda c: c.pending_messages_per_event[event].append({"msg": "process_completed", "event_id": event})


def test_gradio_clients_in_the_tests_read_again():
    from gradio_client.client import Client

    assert getattr(Client.stream_messages, "reads_again", False), "conftest's hook is not on gradio_client's Client"


def test_a_question_joined_as_the_stream_closed_is_read_on_a_new_stream():
    client = FakeClient()
    client.pending_messages_per_event["first"] = deque()

    def first_read(c):  # the first answer ends; the next question joins before close_stream is read
        completed("first")(c)
        c.pending_messages_per_event["second"] = deque()

    read, calls = scripted(first_read, completed("second"))
    reading_again(read)(client, "sse_v3", "s1")

    assert calls == ["s1", "s1"] and not client.stream_open
    assert [m["msg"] for m in client.pending_messages_per_event["second"]] == ["process_completed"]


def test_a_stream_closed_with_nothing_owed_or_under_a_newer_reader_is_not_read_again():
    client = FakeClient()
    client.pending_messages_per_event["only"] = deque()
    read, calls = scripted(completed("only"))
    reading_again(read)(client, "sse_v3", "s1")
    assert calls == ["s1"]  # every answer came: the stream stays closed

    client = FakeClient()
    client.pending_messages_per_event["late"] = deque()

    calls = []

    def read(c, protocol, session_hash):  # meanwhile a question found the stream closed and opened its own reader
        calls.append(session_hash)
        c.stream_open = True  # that reader's answer is not this one's to follow

    reading_again(read)(client, "sse_v3", "s2")
    assert calls == ["s2"] and client.stream_open
