"""Per visitor, in Chromium: settings survive a reload (this browser only), server-written text in Chinese
on a zh-CN page, and the model picker only for the operator's admins."""

from __future__ import annotations

import re
import time

import pytest
from conftest import calls_made, launched_app, wait_calls_answered, wait_page_loaded, watch_gradio

from llava_app.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OTHER = "tiny-random-llava-onevision"


def _wait(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _open(context, url):
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch_gradio(page)
    page.goto(url)
    page.wait_for_selector("#question textarea", timeout=60_000)
    wait_page_loaded(page)  # the kept settings are in their controls before anything is typed or read
    return page


def _settings(page) -> tuple:
    return (page.locator("#system-prompt textarea").input_value(),
            page.locator("#temperature input[type=number]").input_value(),
            page.locator("#top-p input[type=number]").input_value(),
            page.locator("#max-new-tokens input[type=number]").input_value())


def _set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")
    box.blur()


def test_settings_survive_a_reload_in_this_browser_only(browser, tmp_path, local_backend, image_files):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6)
    with launched_app(config, local_backend()) as (url, app, demo):
        context = browser.new_context(locale="en-US")
        page = _open(context, url)
        page.click("#parameters")
        defaults = _settings(page)
        page.fill("#system-prompt textarea", "Answer like a pirate.")
        page.locator("#system-prompt textarea").blur()
        _set_number(page, "temperature", "0.7")
        _set_number(page, "top-p", "0.5")
        mark = calls_made(page)
        _set_number(page, "max-new-tokens", "42")
        wanted = ("Answer like a pirate.", "0.7", "0.5", "42")
        _wait(lambda: _settings(page) == wanted, what="the settings typed in")
        _wait(lambda: page.evaluate("localStorage.getItem('llava-app-settings')"), what="the kept settings")
        wait_calls_answered(page, since=mark)  # the last change event has been answered
        # and Gradio has written its result to localStorage (after the answer, in a later tick): the store
        # has not changed for a second, as when a person reloads
        kept = [page.evaluate("localStorage.getItem('llava-app-settings')"), time.monotonic()]

        def settled() -> bool:
            now = page.evaluate("localStorage.getItem('llava-app-settings')")
            if now != kept[0]:
                kept[:] = [now, time.monotonic()]
            return time.monotonic() - kept[1] >= 1.0

        _wait(settled, what="the kept settings to settle")
        page.reload()
        page.wait_for_selector("#question textarea")
        wait_page_loaded(page)
        page.click("#parameters")
        _wait(lambda: _settings(page) == wanted, what="the settings after the reload")
        # Another browser (its own localStorage) gets the defaults.
        other = _open(browser.new_context(locale="en-US"), url)
        other.click("#parameters")  # its page load has run (``_open``)
        assert _settings(other) == defaults and defaults[0] == config.system_prompt
        browser.close_context(other)
        context.close()


def test_server_text_follows_a_chinese_browser(browser, tmp_path, local_backend, image_files):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6)
    with launched_app(config, local_backend()) as (url, app, demo):
        context = browser.new_context(locale="zh-CN")
        page = _open(context, url)
        # Before the first upload: the strip's count line
        _wait(lambda: page.inner_text("#limits").strip().startswith("0 / 6 张图片 · 每个问题最多"),
              what="the Chinese count line")
        # A refused upload: a Chinese toast, its title too
        notes = tmp_path / "notes.txt"
        notes.write_text("not a picture")
        page.locator("#gallery input[type=file]").set_input_files(str(notes))
        toast = page.locator(".toast-body").filter(has_text="notes.txt")
        _wait(lambda: toast.count() and "不是本应用能读取的图片、视频或 PDF" in toast.first.inner_text(),
              what="the Chinese toast")
        assert toast.first.locator(".toast-title").inner_text().strip().startswith("警告")
        assert "Warning" not in toast.first.inner_text()
        # The toast comes while the upload's event is still running; its end puts the strip back (empty) and the
        # refusal in the notice. A file given to the strip before then goes to the drop zone the strip replaces.
        _wait(lambda: "notes.txt" in page.inner_text("#notice"), what="the refusal in the notice")
        page.locator("#gallery input[type=file]").set_input_files(str(image_files[0]))
        _wait(lambda: "已添加 Image 1。" in page.inner_text("#notice"), what="the Chinese notice")
        # The camera (the strip's own and the question box's) and the picture's remove button, in Chinese
        assert page.locator("#camera-strip").inner_text().strip() == page.locator("#camera-open").inner_text().strip() \
            == "拍照"
        _wait(lambda: page.get_by_role("button", name="移除 Image 1", exact=True).count(), what="the remove button")
        assert "common.webcam" not in page.content()
        _wait(lambda: "张图片" in page.inner_text("#context-meter"), what="the Chinese context meter")
        page.click("#send")  # an empty question
        _wait(lambda: "请先输入问题。" in page.inner_text("body"), what="the Chinese warning")
        page.fill("#question textarea", "这是什么？")
        page.press("#question textarea", "Enter")
        page.click("#model-sees")
        _wait(lambda: "提示词中有" in page.inner_text("#prompt-stats"), timeout=120, what="the Chinese prompt stats")
        assert "上下文" in page.inner_text("#context-meter") and "tokens" not in page.inner_text("#context-meter")
        # The list of earlier chats: its date ("12月3日 14:05"), tooltips and the delete confirmation
        entry = page.locator("#chat-list .chat-item").first
        # (the list shows the chat as soon as it is saved, "0 轮", and again once the answer is written)
        _wait(lambda: entry.count() and re.fullmatch(r"1 轮 · \d{1,2}月\d{1,2}日 \d\d:\d\d",
                                                     entry.locator(".chat-meta").inner_text().strip()),
              what="the Chinese turn count and date")
        assert entry.locator(".chat-delete").get_attribute("title") == "删除"
        assert entry.locator(".chat-open").get_attribute("title") == "打开这个对话"
        entry.locator(".chat-delete").click()  # the page's own dialog, in Chinese, with its own buttons
        dialog = page.get_by_role("dialog", name="要从这个浏览器的列表中删除这个对话及其图片吗？")
        dialog.wait_for(timeout=60_000)
        dialog.get_by_role("button", name="取消").click()
        dialog.wait_for(state="detached", timeout=60_000)
        assert entry.count() == 1  # cancelled: still listed
        context.close()


def test_only_admins_get_the_model_picker(browser, tmp_path, tiny_cache):
    import os

    from llava_app.engine import make_app_backend
    from llava_app.storage.images import ImageStore

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6,
                    allowed_models=OTHER, auth="ann:pw-ann-1,bob:pw-bob-1", admins="ann")
    backend = make_app_backend(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend) as (url, app, demo):
        for user, password, sees in (("bob", "pw-bob-1", False), ("ann", "pw-ann-1", True)):
            context = browser.new_context()
            page = context.new_page()
            watch_gradio(page)
            page.goto(url)
            page.fill("input[type=text]", user)
            page.fill("input[type=password]", password)
            page.keyboard.press("Enter")
            page.wait_for_selector("#question textarea", timeout=60_000)
            wait_page_loaded(page)  # the picker is shown or not by a page-load event
            assert page.locator("#model-section").is_visible() is sees, user
            context.close()
        assert backend.model_name == "tiny-random"


def test_a_failed_switch_puts_the_picker_back_on_the_loaded_model(browser, tmp_path, tiny_cache):
    import os

    from llava_app.engine import make_app_backend
    from llava_app.storage.images import ImageStore

    broken = tmp_path / "not-a-model"  # a folder without a checkpoint: loading it fails at once
    broken.mkdir()
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6,
                    allowed_models=str(broken), model_switching="everyone")
    backend = make_app_backend(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend) as (url, app, demo):
        context = browser.new_context()
        page = _open(context, url)
        page.click("#model-section")
        picker = page.locator("#model-picker input")
        picker.click()
        page.locator(f'ul[role="listbox"] li:has-text("{broken.name}")').first.click()
        _wait(lambda: broken.name in picker.input_value(), what="the broken model picked")
        page.click("#load-model")
        _wait(lambda: "Could not load" in page.inner_text("#model-status"), what="the reason")
        _wait(lambda: picker.input_value() == "tiny-random", what="the picker back on the loaded model")
        assert "Loaded" not in page.inner_text("#model-status") and "tiny-random" in page.inner_text("#model-name")
        assert backend.model_name == "tiny-random"
        context.close()
