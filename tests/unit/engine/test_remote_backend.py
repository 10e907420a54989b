"""The remote (OpenAI-compatible) backend: what it sends, and every way a server can fail it.

The happy path against a real engine is in test_remote_app.py (this app's own endpoint
in a second process); here a recording fake client and a misbehaving loopback server.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from types import SimpleNamespace

import openai_schemas
import pytest
from conftest import attach_file, launched_app
from fake_openai import FakeOpenAIServer
from gradio_client import Client, handle_file

from llava_app.chat.conversation import Conversation
from llava_app.engine.base import ChatRequest, GenerationParams, PromptReady, TextDelta, Usage
from llava_app.engine.remote import OpenAIBackend
from llava_app.errors import UserError


@pytest.fixture
def fake():
    server = FakeOpenAIServer()
    yield server
    server.close()


def _conversation(store, image_files) -> Conversation:
    """Two images, an answered question, a third image, a follow-up: the shape the page builds."""
    conv = Conversation()
    for p in image_files[:2]:
        attach_file(conv, store, p)
    conv.ask("Compare Image 1 and Image 2")
    conv.answer("They differ.")
    attach_file(conv, store, image_files[2])
    conv.ask("And Image 3?")
    return conv


class RecordingClient:
    """An injected stand-in for ``openai.OpenAI``: records each call, streams canned chunks."""

    def __init__(self, pieces):
        self.calls: list[dict] = []
        self.pieces = pieces
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))
        self.models = SimpleNamespace(list=lambda **kw: SimpleNamespace(data=[SimpleNamespace(id="m")]))

    def _create(self, **kwargs):
        self.calls.append(kwargs)

        def chunk(content=None, finish=None):
            delta = SimpleNamespace(content=content)
            return SimpleNamespace(choices=[SimpleNamespace(delta=delta, finish_reason=finish)], usage=None)

        return iter([chunk(p) for p in self.pieces] + [chunk(finish="stop")])


def test_messages_keep_the_local_engines_order_labels_and_images(store, image_files):
    client = RecordingClient(["Image 3 ", "is green."])
    backend = OpenAIBackend("m", "http://unused/v1", client=client)
    conv = _conversation(store, image_files)
    request = ChatRequest(conv.messages("Be brief."), GenerationParams(temperature=0.7, top_p=0.8, max_new_tokens=33),
                          session_id=conv.id)
    events = list(backend.stream(request))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Image 3 is green."
    (call,) = client.calls
    assert call["model"] == "m" and call["stream"] is True
    assert (call["temperature"], call["top_p"], call["max_tokens"]) == (0.7, 0.8, 33)
    assert call["stream_options"] == {"include_usage": True}
    assert call["extra_headers"] == {"X-Session-ID": conv.id}
    assert "seed" not in call  # none given: the server picks its own
    messages = call["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief." and messages[2]["content"] == "They differ."
    kinds = [(p["type"], p.get("text")) for p in messages[1]["content"]]
    assert kinds == [("text", "Image 1:"), ("image_url", None), ("text", "Image 2:"), ("image_url", None),
                     ("text", "Compare Image 1 and Image 2")]
    assert [(p["type"], p.get("text")) for p in messages[3]["content"]] == [
        ("text", "Image 3:"), ("image_url", None), ("text", "And Image 3?")]
    # Each image is the stored PNG itself, as a data URL, in label order.
    urls = [p["image_url"]["url"] for m in (messages[1], messages[3]) for p in m["content"] if p["type"] == "image_url"]
    for url, ref in zip(urls, conv.images, strict=False):
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == open(ref.path, "rb").read()
    assert isinstance(events[0], PromptReady) and events[0].info.image_labels == ["Image 1", "Image 2", "Image 3"]
    # This client's stream carries no usage: the answer's pieces are counted instead.
    assert events[-1] == Usage(prompt_tokens=None, completion_tokens=2, finish_reason="stop")


def text_of(events) -> str:
    """The answer an engine's event stream spells out."""
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_every_request_body_follows_the_openai_request_schema(fake, store, image_files):
    """What goes upstream, as the server received it, checked against OpenAI's CreateChatCompletionRequest."""
    backend = OpenAIBackend("tiny-random", fake.url)
    conv = _conversation(store, image_files)
    shapes = [(conv.messages("Be brief."), GenerationParams(temperature=0.7, top_p=0.8, max_new_tokens=33)),
              (conv.messages(""), GenerationParams()),  # no system message, greedy
              (conv.messages("Be brief.", first_visible=1, summary="Two photos were compared."), GenerationParams())]
    for messages, params in shapes:
        assert text_of(backend.stream(ChatRequest(messages, params, session_id=conv.id))) == "red green blue "
    fake.mode = "reject-stream-options"  # the retry without stream_options is a request too
    backend = OpenAIBackend("tiny-random", fake.url)
    assert text_of(backend.stream(ChatRequest(conv.messages(""), GenerationParams()))) == "red green blue "
    assert len(fake.requests) == 5 and "stream_options" not in fake.requests[-1]
    for body in fake.requests:
        openai_schemas.check("CreateChatCompletionRequest", body)
    # The check can fail: an image given as a bare string is not a valid content part.
    broken = fake.requests[0]
    broken["messages"][1]["content"][1]["image_url"] = broken["messages"][1]["content"][1]["image_url"]["url"]
    assert openai_schemas.errors("CreateChatCompletionRequest", broken)


def test_start_up_check_names_the_problem_in_one_line(fake):
    from conftest import free_port

    with pytest.raises(UserError, match=r"Cannot reach the model server at .*Connection refused.*is it running"):
        OpenAIBackend("tiny-random", f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UserError, match=r"does not serve 'llava'; it serves 'tiny-random'"):
        OpenAIBackend("llava", fake.url)
    with pytest.raises(UserError, match=r"/models was not found \(HTTP 404\)\. Is --base-url the API root"):
        OpenAIBackend("tiny-random", fake.url[: -len("/v1")])
    fake.models_status = 401
    with pytest.raises(UserError, match=r"refused the API key \(HTTP 401\)") as err:
        OpenAIBackend("tiny-random", fake.url)
    assert "\n" not in str(err.value)
    fake.models_status = 200
    backend = OpenAIBackend("tiny-random", fake.url)
    assert backend.context_length == fake.window and backend.is_random


def _ask(backend, max_new_tokens=20) -> tuple[list, list[str], UserError | None]:
    """The events of one answer to "hi", its text pieces, and the error that ended it (if any)."""
    request = ChatRequest([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                          GenerationParams(max_new_tokens=max_new_tokens))
    events: list = []
    try:
        for event in backend.stream(request):
            events.append(event)
    except UserError as exc:
        return events, _pieces(events), exc
    return events, _pieces(events), None


def _pieces(events) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


@pytest.mark.parametrize("status, message, expected", [
    (400, "At most 6 image(s) may be provided in one prompt.", r"takes at most 6 image\(s\) per prompt"),
    (400, "temperature must be at most 2", r"refused the request \(HTTP 400\): temperature must"),
    (401, "Invalid API key", r"refused the API key \(HTTP 401\)"),
    (413, "Request Entity Too Large", r"too large for the model server \(HTTP 413\)"),
    (429, "Too many requests", r"busy \(HTTP 429"),
    (500, "CUDA error: device-side assert", r"failed \(HTTP 500\): CUDA error"),
    (503, "Service Unavailable", r"failed \(HTTP 503\)"),
])
def test_http_errors_become_clear_messages(fake, status, message, expected):
    backend = OpenAIBackend("tiny-random", fake.url)
    fake.mode, fake.message = status, message
    _, got, err = _ask(backend)
    assert got == [] and err is not None
    assert err.__class__ is UserError
    assert re.search(expected, str(err)), str(err)
    assert "conversation is kept" in str(err)


def test_a_stream_cut_in_the_middle_keeps_what_arrived(fake):
    backend = OpenAIBackend("tiny-random", fake.url)
    fake.mode = "cut"
    _, got, err = _ask(backend)
    assert "".join(got) == "red green blue "
    assert err is not None and "cut off" in str(err) and "part that arrived is kept" in str(err)
    fake.mode = "no-finish"  # a clean close that never said the answer was done
    _, got, err = _ask(backend)
    assert "".join(got) == "red green blue " and err is not None and "cut off" in str(err)
    fake.mode = "error-event"
    _, got, err = _ask(backend)
    assert got and err is not None and "engine crashed" in str(err) and "kept" in str(err)


def test_a_complete_stream_reports_the_servers_token_count(fake):
    backend = OpenAIBackend("tiny-random", fake.url)
    events, got, err = _ask(backend)
    assert err is None and "".join(got) == "red green blue "
    assert events[-1] == Usage(prompt_tokens=42, completion_tokens=3, finish_reason="stop")  # the usage chunk


def test_a_server_that_refuses_stream_options_is_asked_again_without(fake):
    backend = OpenAIBackend("tiny-random", fake.url)
    fake.mode = "reject-stream-options"
    _, got, err = _ask(backend)
    assert err is None and "".join(got) == "red green blue "
    assert "stream_options" in fake.requests[0] and "stream_options" not in fake.requests[1]


def test_time_out_and_server_gone_mid_chat(fake):
    backend = OpenAIBackend("tiny-random", fake.url, timeout=0.5)
    fake.mode = "stall"  # answers after 3 s, too late: the client must have given up at 0.5 s
    _, _, err = _ask(backend)
    assert err is not None and "did not answer within 0.5 s" in str(err)
    fake.close()
    _, _, err = _ask(backend)
    assert err is not None and "Cannot reach the model server" in str(err)


@pytest.mark.parametrize("mode", ["slow", "silent"])
def test_stop_closes_the_stream_and_the_server_sees_it(fake, mode):
    backend = OpenAIBackend("tiny-random", fake.url)
    fake.mode = mode
    request = ChatRequest([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    got = []

    def stop_soon():
        time.sleep(0.3)
        request.cancel.set()

    threading.Thread(target=stop_soon).start()
    started = time.monotonic()
    events = list(backend.stream(request))
    got = _pieces(events)
    assert events[-1].finish_reason == "cancelled"
    # Unstopped, "slow" streams for 30 s and "silent" holds the line for 10 s.
    assert time.monotonic() - started < 5, "Stop did not end the stream at once"
    assert fake.disconnected.wait(3), "the server never saw the connection close"
    if mode == "slow":
        assert 0 < len(got) < 100


# ----- the page over a failing server ------------------------------------------------------


def test_the_app_shows_upstream_errors_and_keeps_the_conversation(fake, tmp_path, image_files):
    from llava_app.config import Config

    config = Config(model="tiny-random", backend="openai", base_url=fake.url, data_dir=str(tmp_path / "d"),
                    max_new_tokens=16)
    with launched_app(config) as (url, _, _):
        client = Client(url, verbose=False)
        assert client.predict("Compare Image 1 and Image 2", [handle_file(str(p)) for p in image_files[:2]],
                              api_name="/chat").strip() == "red green blue"
        for status, message, expected in [
            (400, "At most 1 image(s) may be provided in one prompt.", "takes at most 1 image(s) per prompt and "
             "this conversation has 2"),
            (429, "slow down", "busy (HTTP 429"),
            (500, "boom", "failed (HTTP 500): boom"),
        ]:
            fake.mode, fake.message = status, message
            with pytest.raises(Exception, match=expected.replace("(", r"\(").replace(")", r"\)")):
                client.predict("Which is brighter?", [], api_name="/chat")
        fake.mode = "cut"
        with pytest.raises(Exception, match="cut off"):
            client.predict("Once more?", [], api_name="/chat")
        ctx = client.predict(api_name="/context")
        assert ctx["image_count"] == 2
        # The refused questions were taken back; the cut answer is kept, marked as cut off by the server.
        assert [t["user"] for t in ctx["turns"]] == ["Compare Image 1 and Image 2", "Once more?"]
        assert ctx["turns"][1]["assistant"] == "red green blue " and ctx["turns"][1]["stopped"] is False
        assert ctx["turns"][1]["cut"] == "server"
        fake.mode = "stream"
        assert client.predict("Still there?", [], api_name="/chat").strip() == "red green blue"
        # The whole conversation went out each time: 2 images, then the text-only follow-ups.
        last = fake.requests[-1]["messages"]
        assert sum(p["type"] == "image_url" for m in last if m["role"] == "user" for p in m["content"]) == 2
        assert [m["role"] for m in last][-5:] == ["user", "assistant", "user", "assistant", "user"]
        # Every request of this conversation named it, for sticky routing to an engine replica.
        assert set(fake.session_ids) == {ctx["conversation_id"]}
        for body in fake.requests:  # what the page's questions sent upstream, checked against OpenAI's schema
            openai_schemas.check("CreateChatCompletionRequest", body)


def test_a_seed_is_sent_to_the_server(store, image_files):
    client = RecordingClient(["Same ", "again."])
    backend = OpenAIBackend("m", "http://unused/v1", client=client)
    conv = _conversation(store, image_files)
    params = GenerationParams(temperature=0.9, top_p=0.95, max_new_tokens=8, seed=1234)
    list(backend.stream(ChatRequest(conv.messages(), params, session_id=conv.id)))
    (call,) = client.calls
    assert call["seed"] == 1234 and call["temperature"] == 0.9
