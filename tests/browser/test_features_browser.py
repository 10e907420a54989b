"""The page in headless Chromium: examples, Chinese interface, like/dislike, export/import, model picker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import launched_app, wait_page_loaded, watch_gradio

pytestmark = pytest.mark.browser

OTHER = "tiny-random-llava-onevision"
BOT = '#chatbot [data-testid="bot"]:not(:has(.answer-footer))'  # answers, not their footers


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_cache):
    """One app for the module: feedback on, one other model allowed (the switching test runs last)."""
    from llava_app.config import Config
    from llava_app.engine import make_app_backend
    from llava_app.storage.images import ImageStore

    root = tmp_path_factory.mktemp("browser-app")
    config = Config(model="tiny-random", device="cpu", data_dir=str(root / "data"), max_new_tokens=8,
                    allowed_models=OTHER, model_switching="everyone",
                    feedback_file=str(root / "feedback" / "feedback.jsonl"))
    backend = make_app_backend(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend=backend) as (url, _, _):
        yield url, config


def _page(browser, url: str, locale: str = "en-US"):
    context = browser.new_context(locale=locale, accept_downloads=True, viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch_gradio(page)
    page.goto(url)
    page.wait_for_selector("#gallery")
    wait_page_loaded(page)  # the examples are clicked once the page's load events have answered
    return page


def _wait(condition, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _captions(page) -> list[str]:
    return page.locator("#gallery .caption-label").all_inner_texts()


def _question(page) -> str:
    return page.locator("#question textarea").input_value()


def _answers(page) -> int:
    return page.locator(BOT).count()


def _idle(page) -> bool:
    """No generation running: the Send button is enabled and the chatbot's progress is gone."""
    return page.locator("#chatbot .wrap.default.minimal:not(.hide)").count() == 0 and page.locator("#send").is_enabled()


def _send_and_wait(page, answers_before: int) -> None:
    page.click("#send")
    # An empty answer bubble can show, with the buttons still enabled, before the generation starts.
    _wait(lambda: _answers(page) > answers_before and _idle(page)
          and page.locator(BOT).nth(answers_before).inner_text().strip() != "", what="the answer")


def test_examples_load_images_and_questions(browser, app):
    url, _ = app
    page = _page(browser, url)
    try:
        page.click("#example-compare")
        _wait(lambda: _captions(page) == ["Image 1", "Image 2"], what="the two example images")
        assert _question(page).startswith("What changed between Image 1 and Image 2?")
        _send_and_wait(page, 0)
        # Once the chat has begun the examples give way to it; a new chat offers them again.
        assert not page.locator("#example-followup").is_visible()
        page.click("#new-chat")
        _wait(lambda: _captions(page) == [] and page.locator("#example-followup").is_visible(), what="a new chat")
        # The follow-up example adds its chart, asks and answers its first question itself, and leaves the
        # follow-up question in the box.
        page.click("#example-followup")
        _wait(lambda: _captions(page) == ["Image 1"], what="the chart")
        # Written out: its footer shows (while it streams the bubble is there already, Send locked).
        _wait(lambda: page.locator("#chatbot .answer-footer").count() == 1 and _idle(page), what="the prelude's answer")
        assert "Which month has the highest bar in Image 1?" in page.locator("#chatbot").inner_text()
        assert _question(page).startswith("By how many cups")
        page.click("#new-chat")
        _wait(lambda: page.locator("#example-ocr").is_visible(), what="the examples of a new chat")
        page.click("#example-ocr")
        _wait(lambda: len(_captions(page)) == 1, what="the receipt")
        assert _question(page).startswith("Read the receipt in Image 1")
        _wait(lambda: page.locator("#notice").inner_text().strip() == "Added Image 1.", what="the notice")
    finally:
        browser.close_context(page)


def test_the_interface_follows_a_chinese_browser(browser, app):
    url, _ = app
    page = _page(browser, url, locale="zh-CN")
    try:
        assert page.evaluate("navigator.language") == "zh-CN"
        _wait(lambda: page.locator("#send").inner_text().strip() == "发送", what="the Chinese Send button")
        assert "和你的照片聊天" in page.locator("#title").inner_text()
        assert "模型" in page.locator("#model-name").inner_text()
        assert "把图片拖到这里" in page.locator("#chatbot").inner_text()  # the empty chat says what to do
        assert page.locator("#stop").inner_text().strip() == "停止"
        assert page.locator("#new-chat").inner_text().strip() == "新对话"
        assert page.locator("#example-ocr").inner_text().strip() == "读取收据"
        assert page.locator("#question textarea").get_attribute("placeholder").startswith("问一个关于图片的问题")
        assert "随机权重的测试模型" in page.locator("#random-banner").inner_text()
        assert page.locator("#limits").inner_text().strip().startswith("0 / 6 张图片")  # the strip's count line
        assert page.locator("#chats-toggle").inner_text().strip() == "☰ 对话"
        assert page.locator("#clear-strip").inner_text().strip() == "全部移除…"
        # The example's question comes in the browser's language too; the picture's remove button is named in it.
        page.click("#example-describe")
        _wait(lambda: _question(page) == "详细描述Image 1。", what="the Chinese example question")
        _wait(lambda: page.get_by_role("button", name="移除 Image 1", exact=True).count() == 1,
              what="the remove button named in Chinese")
    finally:
        browser.close_context(page)
    english = _page(browser, url, locale="en-US")
    try:
        _wait(lambda: english.locator("#send").inner_text().strip() == "Send", what="the English Send button")
        assert "Chat with your photos" in english.locator("#title").inner_text()
        assert english.locator("#limits").inner_text().strip().startswith("0 of 6 images")
    finally:
        browser.close_context(english)


def test_like_and_dislike_are_written_to_the_feedback_file(browser, app):
    url, config = app
    feedback = Path(config.feedback_file)
    page = _page(browser, url)
    try:
        page.click("#example-describe")
        _wait(lambda: _captions(page) == ["Image 1"], what="the example image")
        _send_and_wait(page, 0)
        # The answer as written: without the page's mark of an answer cut at its length (a random model's always is).
        answer = page.locator(BOT).first.inner_text().strip().split("\n(cut: ")[0]
        page.locator('#chatbot button[aria-label="Like"]').first.click()
        _wait(lambda: feedback.exists() and feedback.read_text().strip(), what="the feedback line")
        page.locator('#chatbot button[aria-label="Dislike"]').first.click()
        _wait(lambda: len(feedback.read_text().splitlines()) >= 2, what="the second feedback line")
    finally:
        browser.close_context(page)
    records = [json.loads(line) for line in feedback.read_text().splitlines()]
    mine = [r for r in records if r["turns"][0]["user"] == "Describe Image 1 in detail."]
    assert [r["liked"] for r in mine][:2] == [True, False]
    assert mine[0]["turn"] == 0 and mine[0]["answer"].split() == answer.split()
    assert mine[0]["images"][0]["label"] == "Image 1" and "file" not in mine[0]["images"][0]  # no images by default


def test_feedback_is_off_by_default(browser, tmp_path, tiny_cache):
    from llava_app.config import Config

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "data"), max_new_tokens=6,
                    allowed_models="")
    with launched_app(config) as (url, _, _):
        page = _page(browser, url)
        try:
            page.click("#example-describe")
            _wait(lambda: _captions(page) == ["Image 1"], what="the example image")
            _send_and_wait(page, 0)
            assert page.locator('#chatbot button[aria-label="Like"]').count() == 0
            assert page.locator("#model-section").count() == 0  # one allowed model: no picker
        finally:
            browser.close_context(page)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_export_then_import_continues_the_conversation(browser, app, tmp_path):
    url, _ = app
    page = _page(browser, url)
    try:
        page.click("#example-compare")
        _wait(lambda: len(_captions(page)) == 2, what="the example images")
        _send_and_wait(page, 0)
        first_answer = page.locator(BOT).first.inner_text().strip()
        page.click("#export-import")
        page.click("#export-json")
        page.wait_for_selector('#export-file td.filename[aria-label="conversation.json"]')
        with page.expect_download() as info:
            page.locator("#export-file a.download-link").first.click()
        saved = tmp_path / "conversation.json"
        info.value.save_as(saved)
        record = json.loads(saved.read_text())
        assert [im["label"] for im in record["images"]] == ["Image 1", "Image 2"]

        page.click("#new-chat")
        _wait(lambda: _answers(page) == 0 and not _captions(page), what="a new chat")
        page.locator('#export-import input[type="file"]').set_input_files(str(saved))
        _wait(lambda: _captions(page) == ["Image 1", "Image 2"] and _answers(page) == 1, timeout=90, what="the import")
        assert page.locator(BOT).first.inner_text().strip() == first_answer
        page.fill("#question textarea", "And which one is brighter?")
        _send_and_wait(page, 1)
        assert _answers(page) == 2
    finally:
        browser.close_context(page)


def test_model_picker_switches_and_keeps_the_conversation(browser, app):
    """Runs last in this module: it leaves the app on the other model."""
    url, _ = app
    page = _page(browser, url)
    try:
        page.click("#example-describe")
        _wait(lambda: _captions(page) == ["Image 1"], what="the example image")
        _send_and_wait(page, 0)
        page.click("#model-section")
        picker = page.locator("#model-picker input")
        picker.click()
        page.locator(f'ul[role="listbox"] li[aria-label="{OTHER}"], ul[role="listbox"] li:has-text("{OTHER}")'
                     ).first.click()
        page.click("#load-model")
        _wait(lambda: OTHER in page.locator("#model-name").inner_text(), timeout=60, what="the new model's name")
        _wait(lambda: "Loaded" in page.locator("#model-status").inner_text(), what="the status line")
        assert _answers(page) == 1 and _captions(page) == ["Image 1"]
        page.fill("#question textarea", "And now, with the other model?")
        _send_and_wait(page, 1)
        assert _answers(page) == 2
        page.click("#model-sees")
        _wait(lambda: "Image 1" in page.locator("#prompt-stats").inner_text(), what="the prompt stats")
    finally:
        browser.close_context(page)
    fresh = _page(browser, url)  # a page opened after the switch names the model in use
    try:
        _wait(lambda: OTHER in fresh.locator("#model-name").inner_text(), what="the model on a new page")
    finally:
        browser.close_context(fresh)
