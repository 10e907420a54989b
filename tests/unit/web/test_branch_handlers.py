"""The handlers the page's edit, "< 2/3 >", earlier-chats and share controls call, without a server."""

from __future__ import annotations

import dataclasses

import pytest

from fakes import RecordingBackend
from llava_app.application import create_app
from llava_app.chat.conversation import Conversation
from llava_app.config import Config
from llava_app.storage.saved import new_browser_token
from llava_app.web.handlers import ChatHandlers
from unit.web.test_handlers import generate, tab


@pytest.fixture
def setup(tmp_path):
    backend = RecordingBackend()
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), max_images=4, max_new_tokens=8,
                    share_links=True)
    app = create_app(config, backend=backend)
    yield app, ChatHandlers(app), backend
    app.close()


def ask(handlers, backend, conv, question, answer):
    backend.enqueue(answer)
    _, _, conv, *_ = handlers.on_submit(question, conv)  # the box, the strip, the conversation, ...
    generate(handlers, conv)
    return conv


def test_edit_then_switch_with_the_page_handlers(setup, image_files):
    app, handlers, backend = setup
    _, conv, *_ = handlers.on_load_saved(new_browser_token(), Conversation(), tab())
    handlers.on_upload([str(image_files[0])], conv)
    ask(handlers, backend, conv, "q1", "a1")
    ask(handlers, backend, conv, "q2", "a2")
    conv, gallery, chat, *_ = handlers.on_edit(0, "q1 again", [str(image_files[1])], [1], conv)
    assert [label for _, label in gallery] == ["Image 2"] and chat[-1] == {"role": "assistant", "content": ""}
    backend.enqueue("b1")
    updates = generate(handlers, conv)
    answers = [m["content"] for m in updates[-1][2] if m["role"] == "assistant" and "answer-footer" not in m["content"]]
    assert answers[-1] == "b1" and "Image 2: <image> q1 again" in backend.last_prompt
    assert handlers.api_context(conv)["branches"][0] == {"turn": 0, "index": 1, "count": 2, "images": ["Image 2"]}
    conv, gallery, chat, *_ = handlers.on_branch(0, 0, conv, "")
    assert [label for _, label in gallery] == ["Image 1"]
    assert [m["content"] for m in chat if m["role"] == "assistant" and "answer-footer" not in m["content"]] == \
        ["a1", "a2"]
    # a refused switch is a message; the conversation stays
    with pytest.warns(UserWarning, match="no number 4"):
        conv, *_ = handlers.on_branch(0, 3, conv, "")
    assert [t.user for t in conv.turns] == ["q1", "q2"]


def test_earlier_chats_and_share_links_with_the_page_handlers(setup):
    app, handlers, backend = setup
    token = new_browser_token()
    _, conv, *_ = handlers.on_load_saved(token, Conversation(), tab())
    ask(handlers, backend, conv, "The first chat", "ok")
    fresh, *_ = handlers.on_new_chat(conv, tab())
    ask(handlers, backend, fresh, "The second chat", "ok")
    chats = handlers.on_chats(fresh)
    assert [c["title"] for c in chats] == ["The second chat", "The first chat"]
    assert [c["title"] for c in handlers.on_rename(chats[1]["id"], "Renamed", fresh)] == ["The second chat", "Renamed"]
    opened, gallery, question, chat, *_ = handlers.on_open(chats[1]["id"], fresh, tab())
    assert [t.user for t in opened.turns] == ["The first chat"] and question == ""
    assert [c["id"] for c in handlers.on_delete_chat(chats[0]["id"], opened)] == [chats[1]["id"]]

    shared = handlers.on_share(opened)
    record, _ = app.share_links.open(shared["token"])
    assert [t.user for t in record.turns] == ["The first chat"] and shared["url"] == f"/share/{shared['token']}"
    other, *_ = handlers.on_load_saved(new_browser_token(), Conversation(), tab("tab-2"))[1:2]
    with pytest.warns(UserWarning, match="not one of yours"):
        assert handlers.on_revoke(shared["url"], other) is False
    assert handlers.on_revoke(shared["url"], opened) is True and app.share_links.open(shared["token"]) is None


def test_sharing_is_off_by_default(setup, tmp_path):
    app, _, backend = setup
    plain = create_app(dataclasses.replace(app.config, share_links=False, data_dir=str(tmp_path / "d2")),
                       backend=backend)
    try:
        conv = Conversation()
        with pytest.warns(UserWarning, match="Sharing is off"):
            assert ChatHandlers(plain).on_share(conv) == {}
    finally:
        plain.close()
