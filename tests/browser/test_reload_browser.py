"""Nothing lost: a reload restores the conversation, a second tab is told it is open elsewhere (and
starts its own), another browser never sees it.

Also, in a real page: Stop and closing the tab end the generation thread. Runs in headless
Debian Chromium; skipped where there is none, except under CI=true where that fails.
"""

from __future__ import annotations

import pytest
from conftest import launched_app, serving, wait_page_loaded, watch_gradio
from hardening import cpu_rate, generation_threads, wait_until

from llava_app.config import Config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NASTY = "Is this <img src=http://tracker.invalid/px.png> red? ![x](http://tracker.invalid/md.png)"


def open_page(context, url):
    page = context.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url and not
            r.url.startswith(("data:", "blob:")) else None)
    watch_gradio(page)
    page.goto(url)
    page.wait_for_selector("#question textarea", timeout=60_000)
    wait_page_loaded(page)
    page.outside_requests = outside
    return page


def wait_text(page, selector: str, text: str, timeout: float = 30_000) -> None:
    """Wait until the element shows ``text`` (the element may not exist yet)."""
    page.wait_for_function("([sel, t]) => (document.querySelector(sel)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=timeout)


def chat_text(page) -> str:
    return page.inner_text("#chatbot")


def ask(page, text):
    page.fill("#question textarea", text)
    page.press("#question textarea", "Enter")


def test_reload_restores_the_conversation_a_second_tab_is_told_other_browser_never(browser, tmp_path,
                                                                                  local_backend, image_files):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6)
    with launched_app(config, local_backend()) as (url, app, demo):
        alice = browser.new_context()
        page = open_page(alice, url)
        page.locator("#gallery input[type=file]").set_input_files(str(image_files[0]))
        wait_text(page, "#notice", "Added Image 1", timeout=60_000)
        ask(page, NASTY)

        def answered():
            return any(c.turns and c.turns[-1].assistant for c in app.service.sessions.live())

        assert wait_until(answered, timeout=120) is not None
        answer = next(c for c in app.service.sessions.live() if c.turns and c.turns[-1].assistant).turns[-1].assistant
        wait_text(page, "#chatbot", answer)
        token = page.evaluate("localStorage.getItem('llava-app-conversation')")
        assert token  # the browser holds its key (encrypted by Gradio), the page does not show it

        page.reload()
        page.wait_for_selector("#question textarea")
        wait_text(page, "#chatbot", answer)
        assert "<img src=http://tracker.invalid/px.png>" in chat_text(page)  # shown as text, not loaded
        assert page.locator("#gallery img").count() == 1

        # A second tab of the browser is told the conversation is open elsewhere and starts its own, which
        # never saves over the first tab's (the two would overwrite each other's turns).
        second_tab = open_page(alice, url)
        wait_text(second_tab, "#notice", "open in another tab")
        assert answer not in chat_text(second_tab) and second_tab.locator("#gallery img").count() == 0
        # ...with the browser's earlier chats at hand (the one open in the first tab is continued there)
        second_tab.wait_for_function("() => document.querySelectorAll('#chat-list .chat-item').length == 1",
                                     timeout=60_000)
        ask(second_tab, "The second tab's question")
        assert wait_until(lambda: any(c.turns and c.turns[0].user == "The second tab's question" and
                                      c.turns[0].assistant for c in app.service.sessions.live()), timeout=120)
        page.reload()  # the first tab reloads: still its own conversation
        wait_text(page, "#chatbot", answer)
        assert "The second tab's question" not in chat_text(page) and page.inner_text("#notice").strip() == ""
        second_tab.reload()  # the second tab reloads: still not the first tab's
        wait_text(second_tab, "#notice", "open in another tab")
        assert answer not in chat_text(second_tab)

        bob = browser.new_context()  # another browser profile: its own (empty) localStorage
        other = open_page(bob, url)
        # The page's load event has run once the server gave this browser its own key.
        other.wait_for_function("() => localStorage.getItem('llava-app-conversation')", timeout=60_000)
        assert answer not in chat_text(other) and "tracker" not in chat_text(other)
        assert other.locator("#gallery img").count() == 0
        assert other.evaluate("localStorage.getItem('llava-app-conversation')") != token
        # Bob's conversation does not overwrite Alice's: her next reload still has hers.
        ask(other, "Bob's own question")
        assert wait_until(lambda: any(c.turns and c.turns[0].user == "Bob's own question" and c.turns[0].assistant
                                      for c in app.service.sessions.live()), timeout=120) is not None
        page.reload()
        wait_text(page, "#chatbot", answer)
        assert "Bob's own question" not in chat_text(page)
        # Once the first tab is closed, a new tab of the browser gets the conversation again.
        page.close()
        second_tab.close()
        assert wait_until(lambda: len(app.saved) == 1, timeout=30) is not None  # only Bob's is held now
        third_tab = open_page(alice, url)
        wait_text(third_tab, "#chatbot", answer)

        for p in (page, second_tab, third_tab, other):
            assert p.outside_requests == [], f"the page fetched outside resources: {p.outside_requests}"
        alice.close()
        bob.close()


def test_stop_and_closing_the_tab_end_the_generation(browser, tmp_path, local_backend):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=2000)
    with launched_app(config, local_backend()) as (url, app, demo):
        context = browser.new_context()
        page = open_page(context, url)
        ask(page, "Tell me a very long story")
        assert wait_until(lambda: generation_threads(), timeout=60) is not None
        page.click("#stop")
        # The engine's own tests hold Stop to two decode steps; here the page's Stop must reach it.
        assert wait_until(lambda: not generation_threads(), timeout=15) is not None, "Stop: the model went on"
        assert wait_until(lambda: "(stopped)" in chat_text(page), timeout=30) is not None

        ask(page, "Another long story")
        assert wait_until(lambda: generation_threads(), timeout=60) is not None
        page.close()  # the tab goes away mid-answer
        assert wait_until(lambda: not generation_threads(), timeout=15) is not None, "tab close: the model went on"
        assert cpu_rate(1.0) < 0.2
        # The tab's session ended too (its unload handler ran): nothing of it stays live.
        assert wait_until(lambda: len(app.service.sessions) == 0, timeout=10) is not None
        context.close()


ROUTED = "() => fetch('/routed').then(r => r.text())"


def test_a_tab_kept_for_the_next_test_starts_as_in_a_browser_that_never_saw_the_page(browser):
    """The suite's tab pool (``browser_tabs``): the tab the next test gets is the same tab, with nothing of the
    last test left in it (storage, cookies, listeners, routes, init scripts, timeout, viewport)."""
    options = {"viewport": {"width": 900, "height": 700}, "locale": "en-GB"}
    with serving({"/": ("text/html", b"<!doctype html><title>blank</title>")}) as address:
        url = address + "/"
        first = browser.new_context(**options)
        page = first.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script("window.__left = 'an init script of the last test'")
        page.route("**/routed", lambda route: route.fulfill(body="routed"))
        page.set_viewport_size({"width": 400, "height": 300})
        page.goto(url)
        page.evaluate("""() => { localStorage.setItem('kept', '1'); sessionStorage.setItem('tab', '2');
                                 document.cookie = 'who=last; max-age=3600'; }""")
        assert page.evaluate("() => window.__left") and page.evaluate("() => document.cookie") == "who=last"
        assert page.evaluate(ROUTED) == "routed"
        page.set_default_timeout(1_000)
        first.close()

        reused = browser.reused
        second = browser.new_context(**options)
        again = second.new_page()
        assert browser.reused == reused + 1 and again is page, "the closed context's tab was not kept"
        assert again.url == "about:blank" and again.viewport_size == options["viewport"]
        again.goto(url)
        left = again.evaluate("""() => [localStorage.length, sessionStorage.length, document.cookie,
                                        window.__left ?? null]""")
        assert left == [0, 0, "", None], left
        again.evaluate("() => setTimeout(() => alert('for no one'), 0)")  # dismissed by Playwright, not the old handler
        again.wait_for_timeout(300)
        assert dialogs == []
        assert again.evaluate(ROUTED) != "routed"  # the old route is gone
        again.evaluate("() => setTimeout(() => document.body.append(Object.assign(document.createElement('p'), "
                       "{id: 'late'})), 1500)")
        again.wait_for_selector("#late", state="attached")  # past the last test's 1 s: Playwright's default again

        browser.close_context(again)
        other = browser.new_context(viewport={"width": 900, "height": 700})  # other options: a new tab
        assert other.new_page() is not page
        other.close()
