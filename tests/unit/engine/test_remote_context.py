"""Remote mode fits the context window: the server's window, its counts, its refusals, and truthful marks.

Against the misbehaving loopback server (``fake_openai``), whose token count is simple and known; the same
path against llama.cpp itself is ``tests/integration/test_llama_server.py``.
"""

from __future__ import annotations

import base64

import pytest
from conftest import attach_file
from fake_openai import FakeOpenAIServer

from llava_app.chat.context import ContextFitter
from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine import remote_wire
from llava_app.engine.base import ChatRequest, GenerationParams
from llava_app.engine.remote import OpenAIBackend
from llava_app.engine.remote_tokens import IMAGE_TOKENS, estimate_text
from llava_app.errors import UserError
from llava_app.web.handlers.views import chat_value


@pytest.fixture
def fake():
    server = FakeOpenAIServer()
    yield server
    server.close()


def _chat(fake, store, image_files, **backend_kwargs):
    backend = OpenAIBackend("tiny-random", fake.url, **backend_kwargs)
    service = ChatService(backend, store, context=ContextFitter(backend), stream_interval=0.0)
    conv = Conversation()
    for p in image_files[:2]:
        attach_file(conv, store, p)
    return backend, service, conv


def _ask(service, conv, question, max_new_tokens=8) -> str:
    service.ask(conv, question)
    return list(service.stream_answer(conv, GenerationParams(max_new_tokens=max_new_tokens)))[-1]


def _users(body) -> list[str]:
    return [p["text"] for m in body["messages"] if m["role"] == "user" for p in m["content"] if p["type"] == "text"
            and not p["text"].startswith("Image")]


def test_a_prompt_the_server_refuses_as_too_long_loses_its_oldest_turns_and_is_asked_once_more(fake, store,
                                                                                                image_files):
    """No tokenize endpoint: the app estimates, the server (window 260 by its own count) refuses, the app drops."""
    fake.refuse_over = 260
    backend, service, conv = _chat(fake, store, image_files)
    assert backend.estimates_tokens and backend.tokens.kind == ""
    words = " ".join(["word"] * 20)
    for turn in range(4):
        assert _ask(service, conv, f"Q{turn} {words}").strip() == "red green blue"
    # Turns 1-2 fitted; turn 3 was refused once (its count in the reply), then sent without its oldest turns.
    refused = [r for r in fake.requests if fake.count(r) > 260]
    assert refused and all(fake.count(r) <= 260 for r in fake.requests if r not in refused)
    assert conv.first_visible > 0 and _users(fake.requests[-1])[-1].startswith("Q3")
    assert _users(fake.requests[-1])[0] != "Q0 " + words
    # Both pictures are still in every prompt, with their labels (those of dropped turns move forward).
    last = fake.requests[-1]["messages"]
    assert sum(p["type"] == "image_url" for m in last if m["role"] == "user" for p in m["content"]) == 2
    # The server's count taught the app what a picture costs (its estimate of the text stood beside it).
    assert backend.tokens.image_tokens is not None and backend.tokens.image_tokens < IMAGE_TOKENS


def test_a_prompt_too_long_even_alone_is_refused_with_what_to_do_and_the_conversation_kept(fake, store,
                                                                                         image_files):
    fake.refuse_over = 150  # two pictures (200) never fit
    _, service, conv = _chat(fake, store, image_files)
    with pytest.raises(UserError, match="longer than its context window.*Remove a picture") as err:
        _ask(service, conv, "What is this?")
    assert "exceeds the available context size" in str(err.value)
    assert conv.turns == [] and len(conv.pending_images) == 2 and len(fake.requests) == 1  # not asked twice


def test_vllm_tokenize_counts_exactly_and_max_tokens_never_asks_past_the_window(fake, store, image_files):
    fake.tokenize, fake.window = True, 400
    backend, service, conv = _chat(fake, store, image_files)
    assert backend.tokens.kind == "vllm" and backend.context_length == 400
    # The pictures' cost is not known yet (1,024 each assumed: over the window), so nothing is refused on it.
    assert _ask(service, conv, "Compare them", max_new_tokens=100)
    # The answer's usage showed what they cost: the counts are now the server's own, and /context says so.
    assert backend.tokens.image_tokens == fake.image_tokens and not backend.estimates_tokens
    assert conv.last_prompt.n_tokens == fake.count(fake.requests[-1]) and not conv.last_prompt.estimated
    assert conv.summary()["context"]["image_tokens"] == 2 * fake.image_tokens  # not the 2 x 1,024 assumed
    service.ask(conv, "And now?")
    messages = conv.messages()
    assert backend.count_tokens(messages) == fake.count({"messages": backend.to_openai(messages)})
    list(backend.stream(ChatRequest(messages, GenerationParams(max_new_tokens=300))))
    body = fake.requests[-1]
    assert body["max_tokens"] == 400 - fake.count(body) < 300


def test_tgi_s_window_comes_from_its_info(fake, store, image_files):
    fake.window, fake.info = None, {"model_id": "tiny-random", "max_input_tokens": 3000, "max_total_tokens": 4096}
    backend, _, _ = _chat(fake, store, image_files)
    assert backend.tokens.kind == "tgi" and backend.context_length == 4096
    fake.info = {"model_id": "tiny-random"}  # a server that says nothing: the operator's --context-length
    backend, _, _ = _chat(fake, store, image_files, context_length=2048)
    assert backend.context_length == 2048


def test_an_answer_cut_by_its_length_or_by_the_server_is_marked_so_and_the_mark_is_kept(fake, store, image_files):
    backend, service, conv = _chat(fake, store, image_files)
    fake.finish = "length"
    _ask(service, conv, "Long story please")
    assert conv.turns[-1].cut == "length" and conv.summary()["turns"][-1]["finish_reason"] == "length"
    fake.finish, fake.mode = "stop", "cut"
    with pytest.raises(UserError, match="cut off"):
        _ask(service, conv, "Again")
    turn = conv.turns[-1]
    assert turn.assistant == "red green blue " and turn.cut == "server" and not turn.stopped
    assert turn.stats is not None and turn.stats.completion_tokens == 3  # the usage of what arrived
    page = [m["content"] for m in chat_value(conv, str) if m["role"] == "assistant"]
    assert any("length limit" in c for c in page) and any("cut off by the server" in c for c in page)
    assert not any("(stopped)" in c for c in page)
    back = Conversation.restore(conv.to_record())
    assert [t.cut for t in back.turns] == ["length", "server"]


def test_the_estimate_is_conservative_and_documented():
    english = [{"role": "user", "content": [{"type": "text", "text": "Describe the receipt in Image 2 briefly."}]}]
    chinese = [{"role": "user", "content": [{"type": "text", "text": "请简要描述图片二中的收据。"}]}]
    # LLaVA-1.5's tokenizer: 12 tokens (+BOS) for the English, 17 for the Chinese; Qwen2's fewer.
    assert estimate_text(english) >= 12 + 16 and estimate_text(chinese) >= 17 + 16


def test_pictures_go_out_as_their_own_data_urls_made_once(fake, store, image_files, monkeypatch):
    backend, service, conv = _chat(fake, store, image_files)
    conv.ask("A question that spells llava-picture-0 and {\"url\": 1}")  # no placeholder a person can type
    made = []
    real_b64 = remote_wire.base64.b64encode
    monkeypatch.setattr(remote_wire.base64, "b64encode", lambda data: made.append(1) or real_b64(data))
    for _ in range(3):
        list(backend.stream(ChatRequest(conv.messages(), GenerationParams(max_new_tokens=4))))
    assert len(made) == 2  # once per picture, not per turn
    for body in fake.requests:
        parts = body["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == [open(im.path, "rb").read()
                                                                       for im in conv.images]
        assert parts[-1]["text"] == "A question that spells llava-picture-0 and {\"url\": 1}"


def test_the_data_url_cache_keeps_a_conversation_that_outgrows_it():
    """Least-recently-used eviction would miss every picture of a conversation sent in the same order."""
    urls = remote_wire.DataURLs(max_bytes=1)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(3):
            paths.append(f"{tmp}/{i}.png")
            with open(paths[-1], "wb") as fh:
                fh.write(bytes([i]) * 100)
        keep = frozenset(str(i) for i in range(3))
        first = [urls.get(str(i), p, keep) for i, p in enumerate(paths)]
        for p in paths:
            open(p, "wb").close()  # a second read would now give another URL
        assert [urls.get(str(i), p, keep) for i, p in enumerate(paths)] == first
        urls.get("other", paths[0])  # another request: the old pictures may go now, over the budget
        assert urls.get("0", paths[0], keep) != first[0]
