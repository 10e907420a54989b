"""The handlers the page's edit, "< 2/3 >", earlier-chats and share controls call, without a server."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import RecordingBackend
from unit.web.test_handlers import generate, tab

from llava_app.application import create_app
from llava_app.chat.conversation import Conversation
from llava_app.config import Config
from llava_app.storage.saved import new_browser_token
from llava_app.web.handlers import Handlers


@pytest.fixture
def setup(tmp_path):
    backend = RecordingBackend()
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), max_images=4, max_new_tokens=8,
                    share_links=True)
    app = create_app(config, backend=backend)
    yield app, Handlers(app), backend
    app.close()


def ask(handlers, backend, conv, question, answer):
    backend.enqueue(answer)
    _, _, conv, *_ = handlers.chat.on_submit(question, conv)  # the box, the strip, the conversation, ...
    generate(handlers, conv)
    return conv


def test_edit_then_switch_with_the_page_handlers(setup, image_files):
    app, handlers, backend = setup
    _, conv, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), tab())
    handlers.chat.on_upload([str(image_files[0])], conv)
    ask(handlers, backend, conv, "q1", "a1")
    ask(handlers, backend, conv, "q2", "a2")
    # Send while question 1 is edited, its picture unticked and another in the box
    sent = handlers.branches.on_send({"text": "q1 again", "files": [str(image_files[1])]}, 0, [], conv, request=tab())
    conv, gallery, chat = sent.state, sent.gallery, sent.chatbot
    assert [label for _, label in gallery] == ["Image 2"] and chat[-1] == {"role": "assistant", "content": ""}
    backend.enqueue("b1")
    updates = generate(handlers, conv)
    answers = [m["content"] for m in updates[-1][2] if m["role"] == "assistant" and "answer-footer" not in m["content"]]
    assert answers[-1] == "b1" and "Image 2: <image> q1 again" in backend.last_prompt
    assert handlers.api.api_context(conv)["branches"][0] == {"turn": 0, "index": 1, "count": 2, "images": ["Image 2"]}
    shown = handlers.branches.on_branch(0, 0, conv, "")
    conv, gallery, chat = shown.state, shown.gallery, shown.chatbot
    assert [label for _, label in gallery] == ["Image 1"]
    assert [m["content"] for m in chat if m["role"] == "assistant" and "answer-footer" not in m["content"]] == \
        ["a1", "a2"]
    # a refused switch is a message; the conversation stays
    with pytest.warns(UserWarning, match="no number 4"):
        conv = handlers.branches.on_branch(0, 3, conv, "").state
    assert [t.user for t in conv.turns] == ["q1", "q2"]


def test_earlier_chats_and_share_links_with_the_page_handlers(setup):
    app, handlers, backend = setup
    token = new_browser_token()
    _, conv, *_ = handlers.chat.on_load_saved(token, Conversation(), tab())
    ask(handlers, backend, conv, "The first chat", "ok")
    fresh, *_ = handlers.chat.on_new_chat(conv, tab())
    ask(handlers, backend, fresh, "The second chat", "ok")
    chats = app.saved.listing(fresh)
    assert [c["title"] for c in chats] == ["The second chat", "The first chat"]
    renamed = handlers.branches.on_rename(chats[1]["id"], "Renamed", fresh)
    assert [c["title"] for c in renamed] == ["The second chat", "Renamed"]
    shown = handlers.branches.on_open(chats[1]["id"], fresh, tab())
    opened, question = shown.state, shown.question
    assert [t.user for t in opened.turns] == ["The first chat"] and question == ""
    assert [c["id"] for c in handlers.branches.on_delete_chat(chats[0]["id"], opened)] == [chats[1]["id"]]

    shared = handlers.branches.on_share(opened)
    record, _ = app.share_links.open(shared["token"])
    assert [t.user for t in record.turns] == ["The first chat"] and shared["url"] == f"/share/{shared['token']}"
    other, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), tab("tab-2"))[1:2]
    with pytest.warns(UserWarning, match="not one of yours"):
        assert handlers.branches.on_revoke(shared["url"], other) is False
    assert handlers.branches.on_revoke(shared["url"], opened) is True and app.share_links.open(shared["token"]) is None


def test_sharing_is_off_by_default(setup, tmp_path):
    app, _, backend = setup
    plain = create_app(dataclasses.replace(app.config, share_links=False, data_dir=str(tmp_path / "d2")),
                       backend=backend)
    try:
        conv = Conversation()
        with pytest.warns(UserWarning, match="Sharing is off"):
            assert Handlers(plain).branches.on_share(conv) == {}
    finally:
        plain.close()


SKIP = {"__type__": "update"}  # what gr.skip() is


def _chat_text(chat) -> list[str]:
    return [m["content"] for m in chat if isinstance(m["content"], str)]


def test_the_chat_links_edit_a_question_and_switch_its_versions(setup, image_files):
    """The links under each question (page.js hands their action to ``on_action``): Edit fills the box and the
    edit bar, Send asks the question again with the pictures kept, ‹ › switch versions."""
    app, handlers, backend = setup
    _, conv, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), tab())
    handlers.chat.on_upload([str(image_files[0]), str(image_files[1])], conv)
    ask(handlers, backend, conv, "q1", "a1")
    ask(handlers, backend, conv, "q2", "a2")
    chat = handlers.context.views(conv)[0]
    assert [t for t in _chat_text(chat) if "turn-tools" in t] == [
        '<span class="turn-tools"><a href="#llava-edit-0" class="turn-edit" title="Edit this question">✎ Edit</a>'
        '</span>', '<span class="turn-tools"><a href="#llava-edit-1" class="turn-edit" title="Edit this question">'
        '✎ Edit</a></span>']

    out = handlers.branches.on_action("edit-0", conv, "", tab())
    assert out.question == {"text": "q1", "files": []} and out.editing == 0
    assert out.keep["choices"] == ["Image 1", "Image 2"] and out.keep["value"] == ["Image 1", "Image 2"]
    assert out.state == SKIP and out.chatbot == SKIP  # the conversation and the chat stay as they are
    # files put in the box while editing stay there (they go with the edited question)
    in_box = {"text": "x", "files": [str(image_files[2])]}
    assert all(v == SKIP for v in handlers.branches.on_attach_box(in_box, 0, conv))
    assert len(conv.images) == 2

    backend.enqueue("b1")
    sent = handlers.branches.on_send({"text": "q1 edited", "files": [str(image_files[2])]}, 0, ["Image 1"], conv,
                                     request=tab())
    assert sent.question == "" and sent.editing is None and sent.edit_bar["visible"] is False  # the bar closes
    conv = sent.state
    assert [label for _, label in sent.gallery] == ["Image 1", "Image 3"]
    generate(handlers, conv)
    assert "Image 1: <image>" in backend.last_prompt and "Image 2:" not in backend.last_prompt
    assert "Image 3: <image>" in backend.last_prompt and "q1 edited" in backend.last_prompt
    tools = [t for t in _chat_text(handlers.context.views(conv)[0]) if "turn-tools" in t]
    assert len(tools) == 1 and "#llava-branch-0-0" in tools[0] and '<span class="turn-pos">2/2</span>' in tools[0]
    assert '<span class="turn-off">›</span>' in tools[0]  # no version after the newest

    out = handlers.branches.on_action("branch-0-0", conv, "", tab())
    conv, chat = out.state, out.chatbot
    assert [t.user for t in conv.turns] == ["q1", "q2"]
    assert [m for m in _chat_text(chat) if m in ("a1", "a2")] == ["a1", "a2"]
    assert "1/2" in [t for t in _chat_text(chat) if "turn-tools" in t][0]
    # nonsense from a client changes nothing
    assert all(v == SKIP for v in handlers.branches.on_action("rm -rf", conv, "", tab()))


def test_send_while_not_editing_is_a_new_question_and_cancel_closes_the_bar(setup):
    app, handlers, backend = setup
    _, conv, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), tab())
    backend.enqueue("a1")
    out = handlers.branches.on_send({"text": "hello", "files": []}, None, [], conv, request=tab())
    assert [t.user for t in out.state.turns] == ["hello"] and out.editing == SKIP  # the bar stays as it is
    generate(handlers, conv)
    assert handlers.branches.on_cancel_edit()[:2] == ("", None)
    # editing a turn that is not there is a message; the conversation stays
    with pytest.warns(UserWarning, match="no turn 5"):
        out = handlers.branches.on_send({"text": "x", "files": []}, 4, [], conv, request=tab())
    assert [t.user for t in conv.turns] == ["hello"]


def test_the_list_of_earlier_chats_is_escaped_and_says_how_long_it_keeps_them(setup):
    app, handlers, backend = setup
    token = new_browser_token()
    _, conv, *_ = handlers.chat.on_load_saved(token, Conversation(), tab())
    ask(handlers, backend, conv, "<script>alert(1)</script> & more", "ok")
    page = handlers.branches.chats_view(conv)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "class='chat-item current'" in page and page.count("#llava-open-") == 1
    assert "Kept in this browser for 7 days after their last use" in page and "1,024 MB" in page
    fresh, *_ = handlers.chat.on_new_chat(conv, tab())
    row = app.saved.listing(fresh)[0]["id"]
    out = handlers.branches.on_action(f"rename-{row}:Cats & <dogs>", fresh, "", tab())
    assert "Cats &amp; &lt;dogs&gt;" in out.listing
    out = handlers.branches.on_action(f"open-{row}", fresh, "", tab())
    assert [t.user for t in out.state.turns] == ["<script>alert(1)</script> & more"] and out.editing is None
    opened = out.state
    out = handlers.branches.on_action(f"delete-{row}", opened, "", tab())
    assert "chat-item" not in out.listing and "appear here" in out.listing
    # it was the chat on the screen: the screen shows a new, empty one, not the deleted one
    assert out.state is not opened and out.state.turns == [] and out.gallery == [] and out.question == ""
    assert all(m["role"] != "user" for m in out.chatbot)


def test_share_on_the_page_gives_a_full_link_and_revoke_ends_it(setup):
    app, handlers, backend = setup
    _, conv, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), tab())
    with pytest.warns(UserWarning, match="nothing to share"):
        assert all(v == SKIP for v in handlers.branches.on_share_page(conv, tab()))
    ask(handlers, backend, conv, "share me", "ok")
    request = tab()
    request.headers["referer"] = "http://127.0.0.1:7860/?lang=en"
    text, revoke, token = handlers.branches.on_share_page(conv, request)
    assert f"http://127.0.0.1:7860/share/{token}" in text and "until" in text and revoke["visible"] is True
    assert app.share_links.shares.get(token) is not None
    text, revoke, left = handlers.branches.on_revoke_page(token, conv)
    assert "revoked" in text and left == "" and app.share_links.shares.get(token) is None


def test_the_list_the_edit_bar_and_share_speak_chinese_to_a_chinese_browser(setup):
    app, handlers, backend = setup
    request = tab()
    request.headers["accept-language"] = "zh-CN,zh;q=0.9"
    _, conv, *_ = handlers.chat.on_load_saved(new_browser_token(), Conversation(), request)
    assert "提问之后，你的对话会出现在这里。" in handlers.branches.on_list(conv, request)
    ask(handlers, backend, conv, "第一个问题", "ok")
    page = handlers.branches.on_list(conv, request)
    assert "1 轮 · " in page and "最后一次使用后 7 天" in page and "Kept in" not in page
    out = handlers.branches.on_action("edit-0", conv, "", request)
    assert out.edit_title.startswith("**正在编辑第 1 个问题**") and "Editing" not in out.edit_title
    text, _, token = handlers.branches.on_share_page(conv, request)
    assert text.startswith("当前分支的只读链接") and token
    assert handlers.branches.on_revoke_page(token, conv, request)[0] == "链接已撤销，无法再打开。"
