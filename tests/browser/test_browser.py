"""The page as a person uses it, in real headless Chromium (issue 3).

Playwright drives Debian's Chromium (``/usr/bin/chromium``, or ``CHROMIUM_PATH``;
Playwright's own browser download is not used) against the real app, launched here on a
free loopback port with the tiny random model. The model's stream is slowed with the
app's ``stream_delay`` knob (seconds per decode step) so growth and Stop can be watched.
Without a browser the tests skip with how to install one; under ``CI=true`` they fail.

A screenshot of the page after the follow-up scenario is saved as
``artifacts/screenshots/follow-up.png`` (the CI artifact; the README's picture is a copy).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import launched_app, wait_page_loaded, watch_gradio
from PIL import Image, ImageDraw

from llava_app.engine.base import Backend

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
STREAM_DELAY = 0.05  # seconds per decode step: a 16-token answer streams for about a second
ANSWER_TOKENS = 16
LONG_ANSWER_TOKENS = 1500  # over a minute at STREAM_DELAY: long enough to press Stop in
WAIT_MS = 60_000  # generous: the machines running these tests are shared and often busy


# ----- the browser, the app, the page ----------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _patient_expectations():
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def app_setup(tmp_path_factory, tiny_cache):
    """The config and the real local engine (tiny random model, slowed stream) the servers share."""
    from llava_app.config import Config
    from llava_app.engine import make_backend
    from llava_app.storage.images import ImageStore

    data = tmp_path_factory.mktemp("browser-data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=ANSWER_TOKENS,
                    max_new_tokens_limit=2000, stream_delay=STREAM_DELAY)
    return config, make_backend(config, ImageStore(os.path.join(config.data_dir, "images")))


@pytest.fixture(scope="module")
def server(app_setup) -> Iterator[str]:
    config, backend = app_setup
    with launched_app(config, backend) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Four small, different pictures (drawn, so the screenshot shows something)."""
    folder = tmp_path_factory.mktemp("pictures")
    scenes = [("#87ceeb", "#3c9d3c", "#ffd700"), ("#1d2b53", "#7e2553", "#fff1e8"),
              ("#ffccaa", "#008751", "#ff004d"), ("#c2c3c7", "#5f574f", "#29adff")]
    paths = []
    for i, (sky, ground, sun) in enumerate(scenes, start=1):
        img = Image.new("RGB", (160, 120), sky)
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, 80, 160, 120], fill=ground)
        draw.ellipse([20 + 25 * i, 15, 50 + 25 * i, 45], fill=sun)
        draw.polygon([(100 - 10 * i, 80), (120 - 10 * i, 55), (140 - 10 * i, 80)], fill="#5a3e2b")
        path = folder / f"photo{i}.png"
        img.save(path)
        paths.append(path)
    return paths


# Records, in the page itself, every text the newest answer takes and every state of the
# controls (with their times), and when Stop was clicked: polling from Python could miss
# short-lived states, such as an answer's first words or the controls' busy spell.
RECORDER = """() => {
  window.__answers = [];
  window.__controls = [];
  const root = document.querySelector('#chatbot');
  window.__answerText = (row) => {  // an answer as written: its quiet footer (timing, tokens) left out, and
    const copy = row.cloneNode(true);  // the mark of an answer cut at its length (a random model's always is)
    copy.querySelectorAll('.answer-footer').forEach(e => e.remove());
    document.body.appendChild(copy);
    const text = copy.innerText.trim().split('\\n(cut: ')[0];
    copy.remove();
    return text;
  };
  const record = () => {
    const rows = root.querySelectorAll('.message-row.bot-row');
    const text = rows.length ? window.__answerText(rows[rows.length - 1]) : null;
    const last = window.__answers[window.__answers.length - 1];
    if (!last || last.n !== rows.length || last.text !== text)
      window.__answers.push({t: performance.now(), n: rows.length, text: text});
  };
  new MutationObserver(record).observe(root, {subtree: true, childList: true, characterData: true});
  const controls = () => {
    const state = {};
    for (const id of ['send', 'stop', 'regenerate', 'undo', 'new-chat'])
      state[id] = !document.querySelector('#' + id).disabled;
    const last = window.__controls[window.__controls.length - 1];
    if (!last || JSON.stringify(last.enabled) !== JSON.stringify(state))
      window.__controls.push({t: performance.now(), enabled: state});
  };
  controls();
  new MutationObserver(controls).observe(document.body, {subtree: true, attributes: true,
                                                         attributeFilter: ['disabled']});
  document.addEventListener('click', (e) => {
    if (e.target.closest('#stop')) window.__stopAt = performance.now();
  }, true);
}"""


class ChatPage:
    """One person's tab: what they do (upload, type, click) and what they see."""

    def __init__(self, page, url: str):
        from playwright.sync_api import expect

        self.page, self.url, self.expect = page, url, expect
        self.dialogs: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self) -> ChatPage:
        watch_gradio(self.page)
        self.page.goto(self.url)
        for elem_id in ("gallery", "chatbot", "question", "send", "stop", "regenerate", "undo", "new-chat"):
            self.expect(self.page.locator(f"#{elem_id}")).to_be_visible()  # the page is built
        wait_page_loaded(self.page, timeout=WAIT_MS)  # and its load events have answered
        self.page.evaluate(RECORDER)
        return self

    # ----- what the person sees -----
    @property
    def captions(self):
        return self.page.locator("#gallery .caption-label")

    def thumbnails(self) -> list[str]:
        return [img.get_attribute("src") for img in self.page.locator("#gallery .gallery-item img").all()]

    @property
    def questions(self):
        return self.page.locator("#chatbot .message-row.user-row")

    @property
    def answers(self):
        return self.page.locator("#chatbot .message-row.bot-row")

    def answer_texts(self) -> list[str]:
        """Each answer's text, without its footer (time to first token, tokens per second, ...)."""
        return self.page.evaluate("() => [...document.querySelectorAll('#chatbot .message-row.bot-row')]"
                                  ".map(row => window.__answerText(row))")

    def answer_footers(self) -> list[str]:
        return [t.strip() for t in self.page.locator("#chatbot .answer-footer").all_inner_texts()]

    def question_texts(self) -> list[str]:
        """Each question's text (its pictures, shown as thumbnails above it, and its line of Edit and "‹ 2/3 ›"
        under it left out)."""
        return self.page.evaluate("() => [...document.querySelectorAll('#chatbot .message-row.user-row')]"
                                  ".map(row => [...row.querySelectorAll('.message:not(.component):not(:has(.message))"
                                  ":not(:has(.turn-tools))')]"
                                  ".map(m => m.innerText.trim()).join('\\n'))")

    def chat_thumbnail_labels(self) -> list[str]:
        """The labels under the thumbnails in the chat (each turn's pictures)."""
        return [t.strip() for t in self.page.locator("#chatbot .caption-label").all_inner_texts()]

    @property
    def notice(self):
        return self.page.locator("#notice")

    @property
    def toasts(self):
        return self.page.locator(".toast-body")

    def button(self, elem_id: str):
        return self.page.locator(f"#{elem_id}")

    @property
    def question_box(self):
        return self.page.locator("#question textarea")

    def model_sees(self) -> tuple[str, str]:
        """The "What the model sees" panel (opened if closed): the summary line and the prompt."""
        if not self.page.locator("#prompt-view").is_visible():
            self.page.locator("#model-sees > button.label-wrap").click()
            self.expect(self.page.locator("#prompt-view")).to_be_visible()
        return (self.page.locator("#prompt-stats").inner_text(),
                self.page.locator("#prompt-view textarea").input_value())

    def recorded(self) -> list[dict]:
        return self.page.evaluate("() => window.__answers")

    def now(self) -> float:
        """The page's clock (ms), to tell what happened after an action from what came before."""
        return self.page.evaluate("() => performance.now()")

    # ----- what the person does -----
    def upload(self, *paths: Path) -> None:
        self.page.locator("#gallery input[type=file]").set_input_files([str(p) for p in paths])

    def press(self, elem_id: str) -> float:
        """Click a button; returns the page time just before the click."""
        since = self.now()
        self.button(elem_id).click()
        return since

    def type_and_send(self, text: str) -> float:
        self.question_box.fill(text)
        return self.press("send")

    def ask(self, text: str) -> str:
        """Send a question, wait for the whole answer, return it."""
        count = self.answers.count()
        self.wait_until_answered(count + 1, since=self.type_and_send(text))
        return self.answer_texts()[-1]

    def wait_until_writing(self, since: float) -> dict:
        """Since ``since`` an answer began to be written: Stop was offered, the other controls were not."""
        self.page.wait_for_function("(since) => window.__controls.some(c => c.t >= since && c.enabled.stop)",
                                    arg=since, timeout=WAIT_MS)
        busy = next(c["enabled"] for c in self.page.evaluate("() => window.__controls")
                    if c["t"] >= since and c["enabled"]["stop"])
        assert busy == {"send": False, "stop": True, "regenerate": False, "undo": False, "new-chat": False}
        return busy

    def wait_until_answered(self, n_answers: int, since: float) -> None:
        """The answer begun after ``since`` is written out, it is the n-th, and the controls are back."""
        self.wait_until_writing(since)
        self.page.wait_for_function("""(since) => {
            const c = window.__controls.filter(c => c.t >= since);
            const busy = c.findIndex(e => e.enabled.stop);
            return busy >= 0 && c.slice(busy + 1).some(e => e.enabled.send && !e.enabled.stop);
        }""", arg=since, timeout=WAIT_MS)
        self.expect(self.answers).to_have_count(n_answers)
        for name in ("send", "regenerate", "undo", "new-chat"):
            self.expect(self.button(name)).to_be_enabled()
        self.expect(self.button("stop")).to_be_disabled()

    def set_parameter(self, elem_id: str, value: float) -> None:
        """Type a value into a slider's number box in the Parameters panel."""
        box = self.page.locator(f"#{elem_id} input[type=number]")
        if not box.is_visible():
            self.page.locator("#parameters > button.label-wrap").click()
            box.wait_for(state="visible")  # the panel opens with an animation; a busy page is slow to show it
        slider = self.page.locator(f"#{elem_id} input[type=range]")
        for _ in range(2):  # a busy page can drop the first edit; typing it again is what a person does
            box.fill(str(value))
            box.press("Enter")
            box.blur()
            try:
                self.expect(slider).to_have_value(f"{value:g}", timeout=10_000)
                return
            except AssertionError:
                continue
        self.expect(slider).to_have_value(f"{value:g}")


@pytest.fixture
def new_tab(browser, server):
    """``new_tab(url=server)``: a fresh browser context (a new person) with the page open."""
    contexts = []

    def make(url: str = server) -> ChatPage:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        return ChatPage(context.new_page(), url).open()

    yield make
    for context in contexts:
        context.close()


def _upload_two(tab: ChatPage, pictures: list[Path]) -> None:
    tab.upload(pictures[0], pictures[1])
    tab.expect(tab.captions).to_have_text(["Image 1", "Image 2"])


# ----- the scenarios ---------------------------------------------------------------------------
def test_1_two_uploaded_images_show_as_labelled_thumbnails(new_tab, pictures):
    tab = new_tab()
    tab.upload(pictures[0], pictures[1])
    tab.expect(tab.captions).to_have_text(["Image 1", "Image 2"])
    tab.expect(tab.page.locator("#gallery .gallery-item img")).to_have_count(2)
    tab.expect(tab.notice).to_have_text("Added Image 1, Image 2.")
    assert len(set(tab.thumbnails())) == 2
    # They load, from this conversation's own folder: never from the store, whose paths are content hashes.
    tab.page.wait_for_function("() => [...document.querySelectorAll('#gallery .gallery-item img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
    assert all("/shown/" in src and "/images/" not in src for src in tab.thumbnails())


def test_2_the_answer_grows_while_it_streams(new_tab, pictures):
    tab = new_tab()
    _upload_two(tab, pictures)
    tab.wait_until_answered(1, since=tab.type_and_send("Compare Image 1 and Image 2"))
    final = tab.answer_texts()[-1]
    texts = [r["text"] for r in tab.recorded() if r["n"] == 1 and r["text"]]
    intermediate = [t for t in dict.fromkeys(texts) if t != final]
    assert final and len(intermediate) >= 3, f"the answer did not grow in view: {texts}"
    steps = intermediate + [final]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(steps, steps[1:], strict=False)), steps


def test_3_a_follow_up_keeps_both_images_in_what_the_model_sees(new_tab, pictures):
    tab = new_tab()
    _upload_two(tab, pictures)
    tab.ask("Compare Image 1 and Image 2")
    tab.ask("Which one has the bigger sun?")  # the gallery is not touched
    stats, prompt = tab.model_sees()
    assert stats.startswith("2 images in the prompt (Image 1, Image 2)")
    assert prompt.count("<image>") == 2
    assert prompt.index("Image 1:<image>") < prompt.index("Image 2:<image>") < prompt.index("Compare Image 1")
    assert prompt.index("Compare Image 1") < prompt.index("Which one has the bigger sun?")
    tab.expect(tab.captions).to_have_text(["Image 1", "Image 2"])
    assert tab.question_texts() == ["Compare Image 1 and Image 2", "Which one has the bigger sun?"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOTS / "follow-up.png"), full_page=True)


def test_4_stop_ends_a_long_answer_at_once_and_the_next_question_is_answered(new_tab, pictures):
    tab = new_tab()
    tab.upload(pictures[0])
    tab.expect(tab.captions).to_have_text(["Image 1"])
    tab.set_parameter("max-new-tokens", LONG_ANSWER_TOKENS)
    asked = tab.type_and_send("Tell me a long story about Image 1")
    tab.wait_until_writing(asked)
    tab.page.wait_for_function("() => new Set(window.__answers.filter(r => r.n === 1 && r.text)"
                               ".map(r => r.text)).size >= 3", timeout=WAIT_MS)
    tab.press("stop")
    tab.wait_until_answered(1, since=asked)  # "(stopped)" shows once the generation has ended

    # Counted in words, not milliseconds: what the page showed when Stop was clicked, and the
    # final answer, differ by the few decode steps (and page updates) that were in flight.
    stopped_at = tab.page.evaluate("() => window.__stopAt")
    shown = [r["text"] for r in tab.recorded() if r["n"] == 1 and r["text"] and r["t"] <= stopped_at]
    answer = tab.answer_texts()[-1]
    assert answer.endswith("(stopped)")
    final = re.sub(r"\s*\(stopped\)$", "", answer)
    assert shown
    assert len(final.split()) - len(shown[-1].split()) <= 10, "the answer went on growing after Stop"
    assert len(answer.split()) < LONG_ANSWER_TOKENS // 2

    tab.set_parameter("max-new-tokens", ANSWER_TOKENS)
    second = tab.ask("And a short one?")
    assert second and not second.endswith("(stopped)")
    assert tab.question_texts() == ["Tell me a long story about Image 1", "And a short one?"]
    assert tab.answer_texts()[0] == answer


def test_5_regenerate_undo_and_new_chat_do_what_they_say(new_tab, pictures):
    tab = new_tab()
    tab.upload(pictures[0])
    tab.expect(tab.captions).to_have_text(["Image 1"])
    tab.set_parameter("temperature", 1.0)  # sampled, so a regenerated answer differs
    first = tab.ask("What is in Image 1?")
    second = tab.ask("And what colour is the sky?")

    tab.wait_until_answered(2, since=tab.press("regenerate"))
    regenerated = tab.answer_texts()[-1]
    assert regenerated and regenerated != second
    assert tab.answer_texts()[0] == first
    assert tab.question_texts() == ["What is in Image 1?", "And what colour is the sky?"]
    _, prompt = tab.model_sees()
    assert first in prompt and "And what colour is the sky?" in prompt and second not in prompt

    tab.button("undo").click()
    tab.expect(tab.question_box).to_have_value("And what colour is the sky?")  # back in the box
    tab.expect(tab.answers).to_have_count(1)
    assert tab.question_texts() == ["What is in Image 1?"] and tab.answer_texts() == [first]
    stats, prompt = tab.model_sees()
    assert "What is in Image 1?" in prompt and "sky" not in prompt and regenerated not in prompt
    assert stats.startswith("1 image in the prompt (Image 1)")

    tab.button("new-chat").click()
    tab.expect(tab.answers).to_have_count(0)
    tab.expect(tab.questions).to_have_count(0)
    tab.expect(tab.captions).to_have_count(0)
    tab.expect(tab.page.locator("#prompt-stats")).to_have_text("No prompt yet.")
    tab.expect(tab.page.locator("#prompt-view textarea")).to_have_value("")

    tab.ask("A fresh start?")
    stats, prompt = tab.model_sees()
    assert stats.startswith("0 images in the prompt")
    assert "<image>" not in prompt and "What is in Image 1?" not in prompt and "A fresh start?" in prompt


def test_6_an_image_added_mid_conversation_and_a_removed_one_keep_labels_stable(new_tab, pictures):
    tab = new_tab()
    _upload_two(tab, pictures)
    tab.ask("Describe Image 1 and Image 2")
    tab.upload(pictures[2])
    tab.expect(tab.captions).to_have_text(["Image 1", "Image 2", "Image 3"])
    tab.ask("Now compare them with Image 3")
    stats, prompt = tab.model_sees()
    assert stats.startswith("3 images in the prompt (Image 1, Image 2, Image 3)")
    # Image 3 joins at the turn where it was added; the first turn's input is unchanged.
    assert prompt.index("Image 2:<image>") < prompt.index("Describe Image 1") < prompt.index("Image 3:<image>")

    tab.page.locator("#gallery .gallery-item").first.locator(".delete-button").click()
    tab.expect(tab.captions).to_have_text(["Image 2", "Image 3"])
    tab.expect(tab.notice).to_have_text("Removed Image 1.")
    tab.ask("Which is brighter, Image 2 or Image 3?")
    stats, prompt = tab.model_sees()
    assert stats.startswith("2 images in the prompt (Image 2, Image 3)")
    assert "Image 1:<image>" not in prompt and prompt.count("<image>") == 2
    tab.expect(tab.captions).to_have_text(["Image 2", "Image 3"])


def test_7_two_people_at_once_each_see_only_their_own_images_and_turns(new_tab, pictures):
    alice, bob = new_tab(), new_tab()
    alice.upload(pictures[0])
    bob.upload(pictures[1], pictures[2])
    alice.expect(alice.captions).to_have_text(["Image 1"])
    bob.expect(bob.captions).to_have_text(["Image 1", "Image 2"])
    alice_asked = alice.type_and_send("alpha: what is in this picture?")
    bob_asked = bob.type_and_send("beta: compare these two")
    alice.wait_until_answered(1, since=alice_asked)
    bob.wait_until_answered(1, since=bob_asked)
    alice.ask("gamma: and the colours?")

    assert alice.question_texts() == ["alpha: what is in this picture?", "gamma: and the colours?"]
    assert bob.question_texts() == ["beta: compare these two"]
    assert len(bob.answer_texts()) == 1
    assert not set(alice.thumbnails()) & set(bob.thumbnails())  # different pictures, not shared state
    a_stats, a_prompt = alice.model_sees()
    b_stats, b_prompt = bob.model_sees()
    assert a_stats.startswith("1 image") and b_stats.startswith("2 images")
    assert "alpha" in a_prompt and "gamma" in a_prompt and "beta" not in a_prompt
    assert "beta" in b_prompt and "alpha" not in b_prompt and "gamma" not in b_prompt


class OutsideImageAnswerBackend(Backend):
    """TEST-ONLY wrapper around the real engine: after the tiny model's streamed answer it adds a
    Markdown image and raw HTML that point to an outside address, as a hostile or confused model
    might. It tests how the page renders answers, not the model."""

    TAIL = ('\n\n![chart](http://outside.invalid/answer-chart.png) '
            '<img src="http://outside.invalid/answer-raw.png" onerror="window.__pwned = \'answer\'">')

    def __init__(self, inner):
        self.inner = inner
        self.model_name, self.is_random = inner.model_name, inner.is_random
        self.supports_images, self.context_length = inner.supports_images, inner.context_length

    def stream(self, request):
        from llava_app.engine.base import TextDelta, Usage

        for event in self.inner.stream(request):
            if isinstance(event, Usage):
                yield TextDelta(self.TAIL)
            yield event

    def prompt_info(self, messages):
        return self.inner.prompt_info(messages)

    def forget(self, session_id):
        self.inner.forget(session_id)


def test_8_html_script_and_outside_images_never_act(new_tab, app_setup, pictures):
    config, backend = app_setup
    with launched_app(config, OutsideImageAnswerBackend(backend)) as (url, _, _):
        tab = new_tab(url)
        requests: list[str] = []
        tab.page.on("request", lambda r: requests.append(r.url))
        tab.upload(pictures[0])
        tab.expect(tab.captions).to_have_text(["Image 1"])
        question = ('Look <img src=x onerror="window.__pwned = \'question\'"> '
                    '<script>window.__pwned = "script"</script> ![q](http://outside.invalid/question.png)')
        answer = tab.ask(question)
        # Every picture in the chat has loaded or failed (an onerror handler would have run by now).
        tab.page.wait_for_function("() => [...document.querySelectorAll('#chatbot img')].every(i => i.complete)")

        assert tab.page.evaluate("() => window.__pwned") is None
        assert tab.dialogs == []
        outside = [u for u in requests if not u.startswith(url) and not u.startswith(("data:", "blob:"))]
        assert outside == [], f"the page reached outside: {outside}"
        assert not [u for u in requests if u.rstrip("/").endswith("/x")]  # not even the relative src=x
        chat = tab.page.locator("#chatbot")
        tab.expect(chat.locator("script")).to_have_count(0)
        assert chat.locator("[onerror]").count() == 0
        srcs = [img.get_attribute("src") or "" for img in chat.locator("img").all()]
        assert srcs and all(s.startswith(url) for s in srcs), srcs  # only the uploaded picture
        # The person sees what they typed, as text, and the answer's picture as a link.
        assert tab.question_texts() == [question.replace("![q](http://outside.invalid/question.png)", "image: q")]
        assert "image: chart" in answer and "answer-raw.png" in answer

        # The second guard: an outside image that slipped into the page anyhow is refused by
        # the page's Content-Security-Policy before any request leaves the browser.
        with tab.page.expect_event("requestfailed") as failed:
            tab.page.evaluate("""() => document.querySelector('#chatbot').insertAdjacentHTML(
                'beforeend', '<img src="http://outside.invalid/slipped.png">')""")
        assert failed.value.url == "http://outside.invalid/slipped.png" and failed.value.failure == "csp"


def test_9_a_file_that_is_not_an_image_gets_a_clear_message_and_the_chat_survives(new_tab, pictures, tmp_path):
    tab = new_tab()
    tab.upload(pictures[0])
    tab.expect(tab.captions).to_have_text(["Image 1"])
    first = tab.ask("What is in Image 1?")

    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: eggs, milk")
    tab.upload(notes)
    tab.expect(tab.notice).to_contain_text("notes.txt is not an image")
    tab.expect(tab.toasts.filter(has_text="notes.txt is not an image")).to_have_count(1)
    tab.expect(tab.captions).to_have_text(["Image 1"])

    disguised = tmp_path / "holiday.png"  # passes the page's file-type filter; the server reads it
    disguised.write_text("this is not a picture")
    tab.upload(disguised)
    tab.expect(tab.notice).to_contain_text("holiday.png is not an image")
    tab.expect(tab.toasts.filter(has_text="holiday.png is not an image")).to_have_count(1)

    tab.expect(tab.captions).to_have_text(["Image 1"])
    assert tab.question_texts() == ["What is in Image 1?"] and tab.answer_texts() == [first]
    tab.ask("Still there?")
    stats, prompt = tab.model_sees()
    assert stats.startswith("1 image in the prompt (Image 1)")
    assert "What is in Image 1?" in prompt and "Still there?" in prompt


def test_the_strips_clear_all_and_the_chats_clear_button_clear_what_the_model_sees_too(new_tab, pictures):
    tab = new_tab()
    _upload_two(tab, pictures)
    tab.ask("What is in these?")
    tab.page.click("#clear-strip")  # the strip's Clear all asks first
    tab.page.click("#clear-yes")
    tab.expect(tab.captions).to_have_count(0)
    tab.expect(tab.notice).to_have_text("Removed Image 1, Image 2. Undo puts them back.")
    tab.ask("And now?")
    stats, prompt = tab.model_sees()
    assert stats.startswith("0 images in the prompt") and "<image>" not in prompt

    tab.page.locator("#chatbot").get_by_role("button", name="Clear").click()  # the bin atop the chat
    tab.expect(tab.answers).to_have_count(0)
    tab.expect(tab.page.locator("#prompt-stats")).to_have_text("No prompt yet.")
    tab.ask("A clean slate?")
    _, prompt = tab.model_sees()
    assert "What is in these?" not in prompt and "And now?" not in prompt and "A clean slate?" in prompt
    assert tab.question_texts() == ["A clean slate?"]
