"""The page as a chat, at laptop and phone sizes (issue: a chat that people enjoy).

Each test opens its own browser context on one server per module (short answers, a slowed
stream where a test must catch an answer mid-way). Waits are for conditions on the page,
never sleeps; sizes are read from the page's own layout.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import ask_and_wait, free_port, launched_app, wait_page_loaded, watch_gradio
from PIL import Image

pytestmark = pytest.mark.browser

WAIT_MS = 90_000
LAPTOPS = [(1280, 800), (1366, 768)]
PHONE = (390, 844)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache, local_backend):
    from llava_app.config import Config

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path_factory.mktemp("page")),
                    max_new_tokens=24, max_new_tokens_limit=2000, stream_delay=0.03, max_upload_mb=1.0)
    # one answer at a time (--max-batch 1): a second person then waits in line, which a test shows
    with launched_app(config, local_backend(max_batch=1)) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("page-pictures")
    paths = []
    for i, color in enumerate(["#d33", "#36c", "#3a3", "#fc3", "#a3c", "#3cc"], start=1):
        path = folder / f"photo{i}.png"
        Image.new("RGB", (120, 90), color).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def open_page(browser, server):
    """``open_page((width, height), phone=False)``: a new person's page at that size, loaded (``script``: run
    before the page's own scripts)."""
    contexts = []

    def make(size, phone=False, script=None):
        context = browser.new_context(viewport={"width": size[0], "height": size[1]}, is_mobile=phone,
                                      has_touch=phone)
        contexts.append(context)
        page = context.new_page()
        watch_gradio(page)
        if script:
            page.add_init_script(script)
        page.goto(server)
        page.wait_for_selector("#question textarea", timeout=WAIT_MS)
        page.wait_for_function("() => localStorage.getItem('llava-app-conversation')", timeout=WAIT_MS)
        wait_page_loaded(page, timeout=WAIT_MS)  # every load event has answered
        return page

    yield make
    for context in contexts:
        context.close()


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def in_viewport(page, selector: str) -> bool:
    b, view = box(page, selector), page.viewport_size
    return b is not None and b["y"] >= 0 and b["y"] + b["height"] <= view["height"] + 1 and b["x"] >= 0 \
        and b["x"] + b["width"] <= view["width"] + 1


def upload(page, *paths: Path) -> None:
    page.locator("#gallery input[type=file]").set_input_files([str(p) for p in paths])


def captions(page) -> list[str]:
    return [t.strip() for t in page.locator("#gallery .caption-label").all_inner_texts()]


# The strip's labels are exactly ``want`` (a JavaScript expression of ``want``).
CAPTIONS_ARE = ("JSON.stringify([...document.querySelectorAll('#gallery .caption-label')]"
                ".map(e => e.innerText.trim())) === JSON.stringify(want)")


def wait_captions(page, expected: list[str]) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function(f"(want) => {CAPTIONS_ARE}", arg=expected, timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        notice = page.locator("#notice").inner_text(timeout=1000) if page.locator("#notice").count() else ""
        sent = page.evaluate("window.__sent || []")  # with SENT_LOG: what the page captured and sent
        raise AssertionError(f"the strip shows {captions(page)}, not {expected}; notice: {notice!r}"
                             + "".join(f"\n  {line}" for line in sent)) from None


def ask(page, text: str) -> None:
    """Send a question and wait until its answer (and its footer) is written out."""
    ask_and_wait(page, text, WAIT_MS)


# Chromium's layout-shift score of the page so far (buffered entries; a page that never shifted reports none).
LAYOUT_SHIFT = """() => new Promise((resolve) => {
  let score = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (!entry.hadRecentInput) score += entry.value;
    resolve(score);
  }).observe({type: 'layout-shift', buffered: true});
  setTimeout(() => resolve(score), 1000);  // no entry at all: nothing moved
})"""


def chat_share(page) -> float:
    """The conversation's share of the window's height."""
    return box(page, "#chatbot")["height"] / page.viewport_size["height"]


def no_sideways_scroll(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize("size", LAPTOPS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_on_a_laptop_the_conversation_gets_the_room_beside_earlier_chats_and_settings(open_page, pictures, size):
    page = open_page(size)
    assert page.evaluate(LAYOUT_SHIFT) < 0.1  # no jump on load
    assert page.locator("#examples").is_visible()  # an empty chat offers the examples
    upload(page, *pictures[:2])
    wait_captions(page, ["Image 1", "Image 2"])
    for question in ("Compare Image 1 and Image 2", "And which one is brighter?", "One more?"):
        ask(page, question)
    for selector in ("#question", "#send", "#stop", "#gallery", "#regenerate", "#new-chat", "#chat-list"):
        assert in_viewport(page, selector), f"{selector} is out of view at {size}"
    assert page.evaluate("() => window.scrollY") == 0 and no_sideways_scroll(page)
    # Once the chat has begun the examples give way, and the conversation has at least 55% of the height.
    assert not page.locator("#examples").is_visible()
    assert chat_share(page) >= 0.55, f"the chat has {chat_share(page):.0%} of the height at {size}"
    chat, side, chats = box(page, "#chatbot"), box(page, "#side"), box(page, "#chats-side")
    assert chats["x"] + chats["width"] <= chat["x"] + 1 and side["x"] >= chat["x"] + chat["width"] - 1
    assert page.locator("#context-meter").is_visible() and page.locator("#chat-list .chat-item").count() == 1
    # The earlier chats fold away (the chat takes their room) and come back.
    page.click("#chats-toggle")
    page.locator("#chats-side").wait_for(state="hidden")
    assert box(page, "#chatbot")["width"] > chat["width"] + 150
    page.click("#chats-toggle")
    page.locator("#chats-side").wait_for(state="visible")
    # Each answer has its quiet footer (the time in line apart from the first token); each turn's pictures
    # are small labelled thumbnails.
    footer = page.locator("#chatbot .answer-footer").first.inner_text()
    assert "in line" in footer and "first token" in footer and "tok/s" in footer and "encoded" in footer
    assert "image(s)" not in footer
    thumbs = page.locator("#chatbot .thumbnail-item img")
    assert thumbs.count() == 2 and all(thumbs.nth(i).bounding_box()["width"] <= 160 for i in range(2))
    assert page.locator("#chatbot .caption-label").all_inner_texts() == ["Image 1", "Image 2"]


def test_on_a_phone_everything_is_reachable_without_jumps_or_sideways_scroll(open_page, pictures):
    page = open_page(PHONE, phone=True)
    assert page.evaluate("() => window.scrollY") == 0  # no jump to the question box on load
    assert page.evaluate(LAYOUT_SHIFT) < 0.1
    assert in_viewport(page, "#question") and in_viewport(page, "#send") and no_sideways_scroll(page)
    upload(page, *pictures[:4])
    wait_captions(page, ["Image 1", "Image 2", "Image 3", "Image 4"])
    ask(page, "What are these?")
    upload(page, *pictures[4:])
    wait_captions(page, [f"Image {n}" for n in range(1, 7)])
    assert page.locator("#gallery").evaluate("e => e.classList.contains('more-right')")  # more to see: said so
    for n in range(1, 7):  # every remove button named for its picture, 44 px, reachable, nothing over it
        remove = page.get_by_role("button", name=f"Remove Image {n}", exact=True)
        remove.scroll_into_view_if_needed()
        b = remove.bounding_box()
        assert b["width"] >= 44 and b["height"] >= 44, f"Remove Image {n} is {b['width']}x{b['height']}"
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.delete-button') !== null",
                               [b["x"] + b["width"] / 2, b["y"] + b["height"] / 2])
        assert on_top and in_viewport(page, "#gallery"), f"Remove Image {n} is covered or out of view"
    assert page.locator("#gallery .delete-button").first.evaluate("e => getComputedStyle(e).opacity") == "1"
    assert not page.locator("#stop").is_visible()  # Send and Stop share one place: the one that can be pressed
    for selector in ("#send", "#regenerate", "#undo", "#settings-toggle", "#chats-toggle", "#camera-open",
                     "#clear-strip"):
        assert box(page, selector)["height"] >= 44, f"{selector} is too small to tap"
    row = [box(page, s)["y"] for s in ("#regenerate", "#undo")]
    assert max(row) - min(row) < 5  # on one row
    # Settings and the earlier chats open over the chat, and close on a tap outside them.
    assert not page.locator("#side").is_visible() and not page.locator("#chats-side").is_visible()
    page.click("#settings-toggle")
    page.locator("#side").wait_for(state="visible")
    assert in_viewport(page, "#context-meter") and no_sideways_scroll(page)
    page.mouse.click(20, 420)  # on the chat, outside the drawer
    page.locator("#side").wait_for(state="hidden")
    page.click("#chats-toggle")
    page.locator("#chats-side").wait_for(state="visible")
    assert in_viewport(page, "#new-chat") and box(page, "#new-chat")["height"] >= 44
    assert page.locator("#chat-list .chat-item").count() == 1
    page.mouse.click(380, 420)
    page.locator("#chats-side").wait_for(state="hidden")
    page.get_by_role("button", name="Remove Image 6", exact=True).tap()
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('Removed Image 6')",
                           timeout=WAIT_MS)


PASTE = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const file = new File([bytes], 'screenshot.png', {type: 'image/png'});
  const data = new DataTransfer();
  data.items.add(file);
  const box = document.querySelector('#question textarea');
  box.focus();
  box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
}"""

DROP = """([selector, b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type: 'image/png'}));
  const target = document.querySelector(selector);
  for (const type of ['dragenter', 'dragover', 'drop'])
    target.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
}"""


def png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_a_pasted_screenshot_and_files_dropped_on_the_chat_join_the_strip(open_page, pictures):
    page = open_page(LAPTOPS[0])
    upload(page, pictures[0])
    wait_captions(page, ["Image 1"])
    page.evaluate(PASTE, png_b64(pictures[1]))
    wait_captions(page, ["Image 1", "Image 2"])
    page.evaluate(DROP, ["#chatbot .bubble-wrap", png_b64(pictures[2]), "dropped.png"])
    wait_captions(page, ["Image 1", "Image 2", "Image 3"])
    assert page.locator("#notice [data-testid=markdown]").inner_text().strip() == "Added Image 3."
    # Dropped on the strip, which already shows pictures: the next label again.
    page.evaluate(DROP, ["#gallery .grid-wrap", png_b64(pictures[3]), "onto-strip.png"])
    wait_captions(page, ["Image 1", "Image 2", "Image 3", "Image 4"])
    assert page.locator("#question textarea").input_value() == ""  # the box is free for the question
    ask(page, "What are these?")
    # Dropped on the question box's border: the strip again, never a pending attachment in the box too.
    page.evaluate(DROP, ["#question", png_b64(pictures[4]), "onto-the-box.png"])
    wait_captions(page, ["Image 1", "Image 2", "Image 3", "Image 4", "Image 5"])
    assert page.locator("#question img").count() == 0 and page.evaluate(
        "() => document.querySelector('#question input[type=file]').files.length") in (0, 1)


def test_a_new_question_and_its_answer_come_into_view_after_scrolling_up(open_page, pictures):
    page = open_page(LAPTOPS[1])
    upload(page, pictures[0])
    wait_captions(page, ["Image 1"])
    for i in range(4):
        ask(page, f"Question {i} about Image 1, at some length so that the chat grows taller than its box")
    # Scrolled up (again after Gradio's own late scroll to the answer's end): "Jump to the latest" appears,
    # and takes the view back to the newest message.
    page.wait_for_function("""() => {
      const wrap = document.querySelector('#chatbot .bubble-wrap'), jump = document.getElementById('jump-latest');
      if (wrap.scrollTop > 0) { wrap.scrollTop = 0; return false; }
      return jump && !jump.hidden;
    }""", polling=500, timeout=WAIT_MS)
    jump = page.get_by_role("button", name="Jump to the latest message")
    jump.click()
    jump.wait_for(state="hidden", timeout=WAIT_MS)
    page.wait_for_function("() => { const w = document.querySelector('#chatbot .bubble-wrap'); "
                           "return w.scrollHeight - w.clientHeight - w.scrollTop < 120; }", timeout=WAIT_MS)
    page.evaluate("() => { document.querySelector('#chatbot .bubble-wrap').scrollTop = 0; }")
    ask(page, "The newest question?")
    in_view = """() => {
      const chat = document.querySelector('#chatbot').getBoundingClientRect();
      const rows = document.querySelectorAll('#chatbot .message-row.bot-row'), last = rows[rows.length - 1];
      const shown = last.getBoundingClientRect();
      return shown.bottom <= chat.bottom + 2 && shown.top >= chat.top - 2;
    }"""
    page.wait_for_function(in_view, timeout=10_000)  # (the answer's last update lands a moment after its end)


CAMERA_READY = """() => document.querySelector('#camera [aria-label="capture photo"]')
  || [...document.querySelectorAll('#camera button')].some(b => b.innerText.includes('Access Webcam'))"""


# A digest of the camera's current frame (null while no lit frame shows): the photo the page takes is a drawing
# of that frame, and a frame drawn twice is the same picture, which the strip keeps once.
CAMERA_FRAME = """() => { const v = document.querySelector('#camera video');
  if (!v || !v.videoWidth || v.readyState < 2) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d', {willReadFrequently: true}); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0, lit = 0;
  for (let i = 0; i < d.length; i += 4) { h = (Math.imul(h, 31) + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) | 0;
    lit |= d[i] | d[i + 1] | d[i + 2]; }
  return lit ? String(h) : null; }"""


# Run before the page's scripts: a log of each picture the page draws to a blob (its size and digest), each
# upload's answer and each event it sends (the start of the request), for wait_captions to show on a failure.
SENT_LOG = """window.__sent = [];
const note = (m) => window.__sent.push((performance.now() / 1000).toFixed(3) + ' ' + m.slice(0, 400));
const toBlob = HTMLCanvasElement.prototype.toBlob;
HTMLCanvasElement.prototype.toBlob = function (done, ...rest) {
  note('drawn ' + this.width + 'x' + this.height);
  return toBlob.call(this, (blob) => {
    blob.arrayBuffer().then((b) => crypto.subtle.digest('SHA-256', b)).then((d) => note('blob ' + blob.size + ' '
      + Array.from(new Uint8Array(d).slice(0, 6), (x) => x.toString(16).padStart(2, '0')).join('')));
    done(blob);
  }, ...rest);
};
const fetch_ = window.fetch;
window.fetch = async function (resource, options) {
  const url = String(resource && resource.url || resource);
  const sent = url.includes('/queue/join') && options && typeof options.body === 'string';
  if (sent) note('event ' + options.body);
  const response = await fetch_.apply(this, arguments);
  if (url.includes('/upload?')) response.clone().text().then((t) => note('uploaded ' + t));
  return response;
};"""


def take_photo(page, opener: str, played: float, taken: list[str]) -> None:
    """Open the camera with ``opener`` and take a photo once its video has played ``played`` seconds and shows a
    frame none of the photos ``taken`` before showed (Chromium's fake camera: a test pattern that changes with
    every frame, from the same first frame each time the camera opens; in a starved renderer the video's clock
    runs ahead of the frames it shows). The frames shown just before and after the click join ``taken``."""
    page.click(opener)
    page.wait_for_function(CAMERA_READY, timeout=WAIT_MS)
    capture = page.locator("#camera").get_by_role("button", name="capture photo")
    if not capture.count():
        page.locator("#camera").get_by_text("Access Webcam").click()
    page.wait_for_function("([played, taken]) => { const v = document.querySelector('#camera video'); "
                           "if (!v || v.currentTime < played) return false; "
                           f"const frame = ({CAMERA_FRAME})(); return frame !== null && !taken.includes(frame); }}",
                           arg=[played, taken], polling=100, timeout=WAIT_MS)
    before = page.evaluate(CAMERA_FRAME)
    capture.click()
    after = page.evaluate(CAMERA_FRAME)
    taken.extend(frame for frame in (before, after) if frame is not None)


def take_another_photo(page, opener: str, played: float, taken: list[str], want: list[str]) -> None:
    """``take_photo``, again if the photo came out as an earlier one, until the strip shows ``want``.

    Chromium's fake camera plays the same frames from the start each time it opens, and in a starved renderer
    the frame a photo is drawn from can be one the test never saw (between its looks before and after the click):
    a later opening can show it again (seen once in about twenty runs: both photos the same PNG, byte for byte).
    The page then says the picture is already there and keeps the strip as it was, its own rule for a picture sent
    twice, checked here; the next try waits a second longer into the video."""
    duplicate = "is already in this conversation as Image"
    for attempt in range(3):
        before = page.locator("#notice").inner_text()
        take_photo(page, opener, played=played + attempt, taken=taken)
        page.wait_for_function(f"([want, seen, before]) => {CAPTIONS_ARE} "
                               "|| (document.querySelector('#notice').innerText.includes(seen) "
                               "&& document.querySelector('#notice').innerText !== before)",
                               arg=[want, duplicate, before], timeout=WAIT_MS)
        if captions(page) == want:
            return
        assert duplicate in page.locator("#notice").inner_text() and captions(page) == want[:-1]
    wait_captions(page, want)  # three tries: fails with what the page drew and sent


def test_the_camera_adds_the_next_picture_clear_all_asks_and_undoes_and_a_reload_shows_the_same(open_page,
                                                                                                 pictures):
    page = open_page(LAPTOPS[1], script=SENT_LOG)
    upload(page, pictures[0])
    wait_captions(page, ["Image 1"])
    taken: list[str] = []
    take_photo(page, "#camera-open", played=0.1, taken=taken)  # from the question box
    wait_captions(page, ["Image 1", "Image 2"])  # joins the others, which stay in view
    page.locator("#camera-box").wait_for(state="hidden")
    take_another_photo(page, "#camera-strip", 0.6, taken, ["Image 1", "Image 2", "Image 3"])  # and from the strip
    ask(page, "What is in Image 2?")
    # Clear all asks first; nothing goes until the person says so, and Undo puts it all back.
    page.click("#clear-strip")
    page.locator("#clear-confirm").wait_for(state="visible")
    assert "Remove all 3 pictures" in page.locator("#clear-question").inner_text()
    assert captions(page) == ["Image 1", "Image 2", "Image 3"]
    page.click("#clear-yes")
    wait_captions(page, [])
    page.locator("#undo-clear").wait_for(state="visible")
    assert page.locator("#limits").inner_text().strip().startswith("0 of 6 images")
    page.locator("#model-sees > button.label-wrap").click()  # "What the model sees" follows at once
    page.wait_for_function("() => { const s = document.querySelector('#prompt-stats'); "
                           "return s && s.innerText.startsWith('0 images in the prompt'); }", timeout=WAIT_MS)
    page.click("#undo-clear")
    wait_captions(page, ["Image 1", "Image 2", "Image 3"])
    assert page.locator("#notice").inner_text().strip().endswith("Put back Image 1, Image 2, Image 3.")
    # After a reload the count matches the strip, and each answer keeps its footer.
    page.reload()
    wait_page_loaded(page, timeout=WAIT_MS)
    wait_captions(page, ["Image 1", "Image 2", "Image 3"])
    page.wait_for_function("() => document.querySelector('#limits').innerText.trim().startsWith('3 of 6 images')",
                           timeout=WAIT_MS)
    footer = page.locator("#chatbot .answer-footer")
    assert footer.count() == 1 and "first token" in footer.inner_text() and "in line" in footer.inner_text()


def test_a_too_big_upload_says_its_size_and_the_limit(open_page, tmp_path):
    page = open_page(LAPTOPS[0])
    big = tmp_path / "photo.png"
    Image.effect_noise((900, 900), 90).convert("RGB").save(big)  # noise does not compress: about 2.4 MB
    size_mb = big.stat().st_size / 2**20
    assert 1 < size_mb < 4  # over the 1 MB limit, under Gradio's own cap (4x)
    upload(page, big)
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('the limit is')",
                           timeout=WAIT_MS)
    assert page.locator("#notice [data-testid=markdown]").inner_text().strip() == \
        f"photo.png is {size_mb:.1f} MB; the limit is 1.0 MB. Upload a smaller file."
    assert "An error occurred" not in page.content()
    assert page.locator("#limits").inner_text().strip().startswith("0 of 6 images")


def click_stop_while_answering(page) -> None:
    """Stop, pressed while the answer is still being written; if it ended first, the failure says how."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.click("#stop")
    except PlaywrightTimeoutError:
        chat, notice = page.locator("#chatbot").inner_text(), page.locator("#notice").inner_text()
        raise AssertionError(f"the answer ended before Stop ({len(chat)} characters in the chat); its end: "
                             f"{chat[-300:]!r}; notice: {notice!r}") from None


def test_waiting_shows_in_the_chat_and_regenerate_at_temperature_zero_samples(open_page, pictures):
    first, second = open_page(LAPTOPS[0]), open_page(LAPTOPS[0])
    first.locator("#parameters > button.label-wrap").click()
    box_ = first.locator("#max-new-tokens input[type=number]")
    box_.fill("1500")
    box_.press("Enter")
    first.fill("#question textarea", "A very long story, please")
    first.click("#send")
    first.wait_for_function("() => !document.querySelector('#stop').disabled", timeout=WAIT_MS)
    second.fill("#question textarea", "My turn?")
    second.click("#send")
    second.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('1st in line')",
                             timeout=WAIT_MS)
    click_stop_while_answering(first)
    second.wait_for_function("() => document.querySelectorAll('#chatbot .answer-footer').length == 1",
                             timeout=WAIT_MS)
    assert "1st in line" not in second.locator("#chatbot").inner_text()  # the place gave way to the answer
    footer = second.locator("#chatbot .answer-footer").inner_text()  # its time in line apart from the first token
    queued = float(footer.split("in line ")[1].split(" s")[0])
    assert queued > 0.1 and "first token " in footer  # it waited while the first answer was written
    second.click("#regenerate")
    second.wait_for_function("() => document.querySelector('#notice').innerText.includes('temperature 0.7')",
                             timeout=WAIT_MS)
    second.wait_for_function("() => document.querySelectorAll('#chatbot .answer-footer').length == 1 "
                             "&& !document.querySelector('#send').disabled", timeout=WAIT_MS)
    # A question stopped while it waits in line comes back to its box, once the controls are unlocked.
    first.fill("#question textarea", "Another very long story")
    first.click("#send")
    first.wait_for_function("() => !document.querySelector('#stop').disabled", timeout=WAIT_MS)
    second.fill("#question textarea", "Still my turn?")
    second.click("#send")
    second.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('1st in line') "
                             "&& document.querySelector('#question textarea').value === ''", timeout=WAIT_MS)
    second.click("#stop")
    second.wait_for_function("() => document.querySelector('#question textarea').value === 'Still my turn?' "
                             "&& !document.querySelector('#send').disabled", timeout=WAIT_MS)
    assert "Still my turn?" not in second.locator("#chatbot").inner_text()  # taken out of the chat
    click_stop_while_answering(first)


def test_a_thumbnail_in_the_chat_opens_large_with_its_label(open_page, pictures):
    page = open_page(LAPTOPS[0])
    upload(page, pictures[0], pictures[1])
    wait_captions(page, ["Image 1", "Image 2"])
    ask(page, "What are these?")
    page.locator("#chatbot .thumbnail-item img").nth(1).click()
    lightbox = page.locator("#lightbox")
    lightbox.wait_for(state="visible", timeout=WAIT_MS)
    assert page.locator("#lightbox .lightbox-label").inner_text().strip() == "Image 2"
    shown = page.locator("#lightbox img").bounding_box()
    assert shown["width"] > 300 or shown["height"] > 300  # large, not the 128 px thumbnail
    with page.expect_download() as saved:  # its download link, on the bar under it, saves the picture itself
        page.click("#lightbox .lightbox-download")
    assert saved.value.suggested_filename.endswith(".png")
    got, sent = Image.open(saved.value.path()).convert("RGB"), Image.open(pictures[1]).convert("RGB")
    assert got.size == sent.size and got.getpixel((5, 5)) == sent.getpixel((5, 5))
    page.keyboard.press("Escape")
    lightbox.wait_for(state="detached")
    page.locator("#gallery .thumbnail-item img").first.click()  # the strip's thumbnails too
    lightbox.wait_for(state="visible")
    assert page.locator("#lightbox .lightbox-label").inner_text().strip() == "Image 1"
    page.mouse.click(5, 5)  # a click beside the picture closes it (one on the picture marks a region)
    lightbox.wait_for(state="detached")


def test_a_video_and_a_pdf_join_the_strip_as_labelled_keyframes_and_pages(open_page, tmp_path):
    from media_files import make_pdf, make_video

    page = open_page(LAPTOPS[0])
    clip, report = tmp_path / "clip.mp4", tmp_path / "report.pdf"
    clip.write_bytes(make_video())
    report.write_bytes(make_pdf(2))
    upload(page, clip)
    page.wait_for_function("() => document.querySelectorAll('#gallery .caption-label').length == 4", timeout=WAIT_MS)
    frames = captions(page)
    assert [c.split(" · ")[0] for c in frames] == ["Image 1", "Image 2", "Image 3", "Image 4"]
    assert all(" · clip.mp4 @ 0:0" in c for c in frames)
    ask(page, "What happens in this clip?")
    upload(page, report)
    page.wait_for_function("() => document.querySelectorAll('#gallery .caption-label').length == 6", timeout=WAIT_MS)
    assert captions(page)[4:] == ["Image 5 · report.pdf p. 1", "Image 6 · report.pdf p. 2"]


def test_a_stream_closed_while_a_question_is_joined_is_opened_again_and_the_answer_arrives(open_page):
    """Gradio's client drops its event stream on "close_stream"; a question joined in that instant had its answer
    stranded on the server (seen in a full run: the answer saved, six messages never sent, the page waiting).
    page.js keeps the stream: a close that comes while a joined event is open is not passed on, and the stream is
    opened again. The server's side is scripted here (routes), so the race is exact every time."""
    page = open_page(LAPTOPS[0])
    bodies = [
        [{"msg": "process_completed", "event_id": "A", "success": True}, {"msg": "close_stream"}],
        [{"msg": "process_generating", "event_id": "B", "success": True},
         {"msg": "process_completed", "event_id": "B", "success": True}, {"msg": "close_stream"}],
        [{"msg": "process_completed", "event_id": "C", "success": True}, {"msg": "close_stream"}],
    ]
    served = []

    def data(route):
        served.append(route.request.url)
        body = "".join(f"data: {json.dumps(m)}\n\n" for m in bodies[len(served) - 1])
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    page.route("**/queue/data?session_hash=race-test", data)
    page.route("**/queue/join?race-test", lambda route: route.fulfill(
        status=200, headers={"content-type": "application/json"}, body=json.dumps({"event_id": "B"})))
    read = """async (join) => {
      if (join) await (await fetch('/gradio_api/queue/join?race-test', {method: 'POST', body: '{}'})).json();
      const stream = await fetch('/gradio_api/queue/data?session_hash=race-test');
      return (await stream.text()).split('\\n\\n').filter(Boolean).map(b => JSON.parse(b.slice(5)));
    }"""
    # B joined while A's stream closes: the close is held back, the stream is opened again, B's answer comes
    got = page.evaluate(read, True)
    assert [(m["msg"], m.get("event_id")) for m in got] == [
        ("process_completed", "A"), ("process_generating", "B"), ("process_completed", "B"), ("close_stream", None)]
    assert len(served) == 2
    # nothing open: a close is passed on as the server sent it, and no stream is opened again
    got = page.evaluate(read, False)
    assert [(m["msg"], m.get("event_id")) for m in got] == [("process_completed", "C"), ("close_stream", None)]
    assert len(served) == 3


# Before the page's own scripts: counts the animation frames the page asks the browser for.
COUNT_FRAMES = """(() => {
  const frame = window.requestAnimationFrame;
  window.__frames = 0;
  window.requestAnimationFrame = function (callback) { window.__frames++; return frame.call(window, callback); };
})()"""
# The page has asked for no animation frame for a whole second (polled on a timer, which asks for none).
NO_FRAMES_FOR_A_SECOND = """() => {
  const now = performance.now(), seen = window.__still;
  if (!seen || seen.frames !== window.__frames) window.__still = {frames: window.__frames, since: now};
  return now - window.__still.since >= 1000;
}"""


def test_an_open_page_with_nothing_happening_asks_for_no_frames(open_page, pictures):
    """Gradio's loading screen leaves an animation loop running for as long as the tab is open (about 7 % of a
    core in Chromium, a phone's battery); the app's head script ends it. Idle after loading and after an answer."""
    page = open_page(LAPTOPS[0], script=COUNT_FRAMES)
    page.wait_for_function(NO_FRAMES_FOR_A_SECOND, polling=100, timeout=15_000)
    upload(page, pictures[0])
    wait_captions(page, ["Image 1"])
    ask(page, "What is in Image 1?")
    page.wait_for_function(NO_FRAMES_FOR_A_SECOND, polling=100, timeout=15_000)


def test_a_pending_event_shown_on_the_page_still_counts_its_seconds(browser):
    """The head script ends only loops no one sees: a tracker showing a pending event keeps counting (a Gradio
    page of its own, served with the app's middleware, with an event that runs until it is let go)."""
    import threading

    import gradio as gr
    from starlette.middleware import Middleware

    from llava_app.web.server import HeadScript

    release = threading.Event()
    with gr.Blocks() as demo:
        out = gr.Textbox(elem_id="out")
        gr.Button("Go", elem_id="go").click(lambda: "done" if release.wait(60) else "late", None, out,
                                             show_progress="full")
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(),
                        app_kwargs={"middleware": [Middleware(HeadScript)]})
    context = browser.new_context()
    try:
        page = context.new_page()
        page.add_init_script(COUNT_FRAMES)
        page.goto(demo.local_url)
        page.wait_for_selector("#go", timeout=WAIT_MS)
        page.wait_for_function(NO_FRAMES_FOR_A_SECOND, polling=100, timeout=15_000)  # the loading loop ended
        page.click("#go")
        seconds = "() => /[|] *[1-9][0-9]*[.][0-9]/.test(document.querySelector('.progress-text')?.innerText || '')"
        page.wait_for_function(seconds, polling=100, timeout=15_000)  # "processing | 1.2s": its seconds go on
        release.set()
        page.wait_for_function("() => document.querySelector('#out textarea').value === 'done'", timeout=WAIT_MS)
        page.wait_for_function(NO_FRAMES_FOR_A_SECOND, polling=100, timeout=15_000)
    finally:
        release.set()
        context.close()
        demo.close()
