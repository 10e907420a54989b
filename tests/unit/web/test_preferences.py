"""Per-visitor behaviour without a server: kept settings, the second tab, server text in the browser's language."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest
from fakes import RecordingBackend
from PIL import Image

from llava_app.application import create_app
from llava_app.chat.conversation import Conversation, PromptInfo
from llava_app.chat.saved import BrowserSaves
from llava_app.config import Config
from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import SavedConversations, new_browser_token
from llava_app.web.handlers import Handlers
from llava_app.web.handlers.chat import ELSEWHERE
from llava_app.web.handlers.session import SessionHandlers
from llava_app.web.handlers.views import added_notice, merged, meter_text, prompt_stats
from llava_app.web.translations import localize


@pytest.fixture
def app(tmp_path):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "data"), max_new_tokens_limit=512)
    app = create_app(config, backend=RecordingBackend())
    yield app
    app.close()


def request(lang="en-US", session="s1"):
    return SimpleNamespace(username=None, headers={"accept-language": lang}, session_hash=session)


def test_kept_settings_come_back_and_odd_values_are_left_alone(app):
    prefs = SessionHandlers(app)
    kept = prefs.on_settings_change("Answer in French.", 0.7, 0.5, 300)
    assert prefs.on_settings_load(kept) == [gr.update(value="Answer in French."), gr.update(value=0.7),
                                            gr.update(value=0.5), gr.update(value=300)]
    odd = {"system_prompt": 42, "temperature": 9.0, "top_p": float("nan"), "max_new_tokens": 100_000}
    assert prefs.on_settings_load(odd) == [gr.skip()] * 4
    assert prefs.on_settings_load(None) == [gr.skip()] * 4


def test_a_failed_switch_says_why_to_the_admin_who_tried_it_and_to_no_other(tmp_path):
    """Each admin's page shows why its own switch failed: the reason is kept per session, not server-wide."""
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), model_switching="admins",
                    auth="ann:pw-ann-1,bob:pw-bob-1", admins="ann,bob")
    app = create_app(config, backend=RecordingBackend())
    try:
        prefs = SessionHandlers(app)
        ann, bob = request(session="ann-tab"), request(session="bob-tab")
        ann.username, bob.username = "ann", "bob"
        with pytest.raises(gr.Error, match="not-a-model is not one of the models this server offers"):
            prefs.on_switch("not-a-model", ann, progress=lambda *a, **k: None)
        shown_to_bob = prefs.after_failed_switch(bob)[2]
        assert shown_to_bob == "Still using recording-fake." and "not-a-model" not in shown_to_bob
        with pytest.raises(gr.Error, match="Choose a model first"):
            prefs.on_switch("", bob, progress=lambda *a, **k: None)
        assert prefs.after_failed_switch(ann)[2].startswith("not-a-model is not one of the models")
        assert prefs.after_failed_switch(bob)[2] == "Choose a model first. Still using recording-fake."
        assert prefs.after_failed_switch(ann)[2] == "Still using recording-fake."  # shown once, then gone
    finally:
        app.close()


def test_a_second_tab_of_the_browser_does_not_take_the_conversation(tmp_path):
    store = ImageStore(tmp_path / "images")
    saves = BrowserSaves(SavedConversations(tmp_path / "s.sqlite3", tmp_path / "simg"), store)
    token, conv = new_browser_token(), Conversation()
    s = store.put(Image.new("RGB", (8, 8), "red"))
    conv.add_image(s.sha256, s.path, 8, 8, "red.png")
    conv.ask("What is it?")
    conv.answer("Red.")
    saves.bind(conv, token, tab="tab-a")
    saves.save(conv)  # the browser's newest conversation: the one a page load opens
    assert saves.held_elsewhere(token, tab="tab-b")
    assert not saves.held_elsewhere(token, tab="tab-a")  # a reload of the same tab
    assert not saves.held_elsewhere(token)  # a tab that names itself not: as before
    assert not saves.held_elsewhere(new_browser_token(), tab="tab-b")  # another browser
    fresh = Conversation()
    saves.rebind(conv, fresh)  # New chat in tab A: the old conversation stays in the list...
    saves.release(conv.id)  # ...and ends on the server, so another tab may open it
    assert not saves.held_elsewhere(token, tab="tab-b")


def test_the_load_handler_starts_the_second_tab_afresh_with_a_notice(app):
    handlers = Handlers(app)
    token = app.saved.open(None)[0]
    first = Conversation()
    out = handlers.chat.on_load_saved(token, first, request(session="a"), "tab-a")
    assert out[1] is first and out[-1] == gr.update()
    first.ask("Hello?")
    app.saved.save(first)
    out = handlers.chat.on_load_saved(token, Conversation(), request(session="b"), "tab-b")
    assert out[1] is not first and not out[1].turns and out[-1] == str(ELSEWHERE)
    assert app.saved.key_of(out[1]) is None  # never saved over tab A's conversation
    # ...but the browser's earlier chats are at hand in tab B; the one live in tab A is continued there
    second = out[1]
    listed = app.saved.listing(second)
    assert [e["title"] for e in listed] == ["Hello?"]
    with pytest.raises(UserError, match="open in another tab"):
        app.reopen(second, listed[0]["id"])
    out = handlers.chat.on_load_saved(token, Conversation(), request("zh-CN,zh;q=0.9", session="c"), "tab-c")
    assert out[-1] == localize(ELSEWHERE, "zh-CN") and "另一个标签页" in out[-1]
    again = handlers.chat.on_load_saved(token, Conversation(), request(session="a2"), "tab-a")  # tab A reloads
    assert again[3] == "Hello?" and again[-1] == gr.update()  # its unanswered question is back in the box


@pytest.mark.parametrize("english, key, params, chinese", [
    ("Added Image 1, Image 2.", "notice.added", {"labels": "Image 1, Image 2"}, "已添加 Image 1, Image 2。"),
    ("Removed Image 3.", "notice.removed", {"labels": "Image 3"}, "已移除 Image 3。"),
    ("Type a question first.", "chat.type_first", {}, "请先输入问题。"),
    ("Your question is 4,001 characters long; the limit is 4,000. Shorten it and send again.", "chat.too_long",
     {"length": 4001, "limit": 4000}, "你的问题有 4,001 个字符，上限是 4,000。请缩短后再发送。"),
    ("This conversation already has 6 images, the limit is 6. Remove one (x on its thumbnail) or start a new chat.",
     "chat.too_many_images", {"count": 6, "limit": 6}, "已有 6 张图片"),
    ("At most 4 new images go with one question, and 4 are waiting already. Ask about them first, then add more.",
     "chat.too_many_new", {"limit": 4, "waiting": 4}, "每个问题最多附带 4 张新图片"),
    ("notes.txt is not an image this app reads (PNG, JPEG, GIF, WebP or BMP).", "image.not_image",
     {"name": "notes.txt"}, "notes.txt 不是本应用能读取的图片"),
    ("a b.txt is not an image, video or PDF this app reads (images: PNG, JPEG, GIF, WebP, BMP; videos: MP4, WebM, "
     "MOV; documents: PDF).", "media.unknown", {"name": "a b.txt"}, "a b.txt 不是本应用能读取的图片、视频或 PDF"),
    ("photo.jpg is 27 MB; the limit is 20 MB. Upload a smaller file.", "image.too_big",
     {"name": "photo.jpg", "size": "27 MB", "limit": "20 MB"}, "photo.jpg 有 27 MB，上限是 20 MB。请上传更小的文件。"),
    ("The model failed on this request (RuntimeError). Your conversation is kept; try again.", "notice.model_failed",
     {"kind": "RuntimeError"}, "模型处理这个请求时出错（RuntimeError）"),
    ("There is nothing to export yet: add images or ask a question first.", "app.nothing_to_export", {},
     "还没有可导出的内容"),
    ("*3rd in line: your answer starts as soon as the model is free…*", "mark.waiting", {"place": 3},
     "*排队第 3 位：模型一空闲就开始写你的回答…*"),
])
def test_messages_by_key_in_english_and_chinese(english, key, params, chinese):
    message = Message(key, **params)
    assert str(message) == english == localize(message, "en")  # logs and the API keep the English
    assert chinese in localize(message, "zh-CN") and localize(message, "zh") == localize(message, "zh-CN")
    assert localize(english, "zh-CN") == english  # finished text (people's, the model's) is never translated


def test_an_upload_notice_joins_its_messages_in_the_readers_language():
    problems = [Message("image.too_big", name="photo.jpg", size="27 MB", limit="20 MB")]
    assert added_notice(["Image 1"], problems) == "Added Image 1. photo.jpg is 27 MB; the limit is 20 MB. Upload a " \
                                                   "smaller file."
    assert added_notice(["Image 1"], problems, "zh-CN") == \
        "已添加 Image 1。photo.jpg 有 27 MB，上限是 20 MB。请上传更小的文件。"
    named = [Message("upload.named", name=n, problem=Message("chat.too_many_new", limit=4, waiting=4))
             for n in ("a.png", "b.png")]
    assert [str(m) for m in merged(named)] == ["a.png, b.png: At most 4 new images go with one question, and 4 are "
                                               "waiting already. Ask about them first, then add more."]
    assert localize(merged(named)[0], "zh-CN").startswith("a.png, b.png：每个问题最多附带 4 张新图片")


def test_the_meter_and_the_prompt_statistics_in_chinese():
    conv = Conversation()
    conv.set_prompt(PromptInfo(text="x", n_images=2, n_tokens=1234, image_labels=("Image 1", "Image 2"),
                               n_image_tokens=1152))
    conv.first_visible = 1
    english = meter_text(conv, 4096)
    chinese = meter_text(conv, 4096, lang="zh-CN")
    assert english == "Context: **1,234** / 4,096 tokens (30%) · 0 images · 1 earlier turn no longer seen by the model"
    assert chinese == "上下文：**1,234** / 4,096 词元（30%） · 0 张图片 · 模型已看不到较早的 1 个回合"
    assert meter_text(Conversation(), 4096, lang="zh-CN") == "上下文窗口：4,096 词元 · 0 张图片"
    assert prompt_stats(conv.last_prompt, "", "zh-CN") == \
        "提示词中有 **2** 张图片（Image 1, Image 2）· **1234** 个提示词元"
    from llava_app.chat.parts import AnswerStats

    conv.ask("Hi?")  # the answer just written counts too: the next question carries it
    conv.answer("Hello.", stats=AnswerStats(ttft_s=0.1, tokens_per_s=10.0, prompt_tokens=1234, completion_tokens=66))
    assert meter_text(conv, 4096).startswith("Context: **1,300** / 4,096 tokens (32%)")


def test_handlers_write_the_meter_notices_and_warnings_in_the_browsers_language(app, image_files, monkeypatch):
    handlers, conv = Handlers(app), Conversation()
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    zh = request("zh-CN,zh;q=0.9")
    _, conv, notice, limits, meter = handlers.chat.on_upload([str(image_files[0])], conv, request=zh)
    assert notice == "已添加 Image 1。" and "1 张图片" in meter and limits.startswith("1 / ")
    handlers.chat.on_submit("  ", conv, zh)
    assert warnings == ["请先输入问题。"]
    assert handlers.chat.on_export("json", Conversation(), "", "zh-CN") is None and "还没有可导出的内容" in warnings[-1]
    _, _, notice, _, _ = handlers.chat.on_upload([str(image_files[0])], conv, request=request())
    assert "already in this conversation" in notice  # English stays English


def test_the_chats_own_marks_follow_the_browsers_language_and_the_words_written_do_not(app):
    from llava_app.chat.parts import AnswerStats

    handlers, conv = Handlers(app), Conversation()
    conv.ask("Is it (stopped)?")
    conv.answer("It says *(stopped)* on the sign.", stopped=True,
                stats=AnswerStats(ttft_s=0.31, tokens_per_s=42.0, prompt_tokens=90, completion_tokens=12,
                                  images_encoded=0, images_cached=1))
    english = [m["content"] for m in handlers.context.views(conv)[0]]  # question, Edit, answer, footer
    chinese = [m["content"] for m in handlers.context.views(conv, lang="zh-CN")[0]]
    assert len(english) == len(chinese) == 4
    # the question and the answer as written (a sign reading "(stopped)" stays), the mark after it translated
    assert chinese[0] == english[0] == "Is it (stopped)?"
    assert chinese[2].startswith("It says *(stopped)* on the sign.") and chinese[2].endswith("*（已停止）*")
    assert english[2].endswith("*(stopped)*")
    assert "✎ 编辑" in chinese[1] and "✎ Edit" in english[1]
    assert chinese[3] == ('<span class="answer-footer">首个词元 0.31 秒 · 42 词元/秒 · 12 个词元 · '
                          "图片：1 张来自缓存，0 张新编码</span>")
    conv.ask("And then?")
    waiting = [handlers.context.views(conv, waiting=2, lang=lang)[0][-1]["content"] for lang in ("en", "zh-CN")]
    assert waiting[0].startswith("*2nd in line") and waiting[1] == "*排队第 2 位：模型一空闲就开始写你的回答…*"
