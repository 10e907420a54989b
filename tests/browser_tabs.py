"""The browser tests' tabs, kept from one test of a module to the next.

A new browser context with a new tab costs Chromium about 0.85 CPU-s before it loads anything (a renderer
process, its isolate, the tab), and the page's first load in it compiles Gradio's scripts from scratch.
Loading our page in a fresh context cost 2.5-2.7 CPU-s of Chromium; loading it again in a tab that had
already shown it, 0.7-0.9 (measured side by side, four loads each). The browser tests load the page about
sixty times a run, one person (context) per test.

So ``Tabs.new_context(**options)`` hands out a context as ``Browser.new_context`` does, and its first
``new_page()`` is a tab an earlier test of the module used with the same options, made new again first:

* its cookies and permissions are cleared, and the storage of the one site it showed (localStorage,
  sessionStorage, IndexedDB and the rest) is deleted, so the page starts as in a browser that has never
  seen it (the app keeps its conversation, settings and tab id there);
* the listeners, routes and init scripts the test added to the tab are removed, its default timeout and
  its viewport are put back;
* it is at ``about:blank``: the test's page is unloaded, as a closed tab is, before the next test begins.

A tab the test closed, a context that had more than one tab, or a tab that showed more than one site
is closed, not kept. What a test sees is a browser that has never seen the page, with the browser's own
HTTP cache warm (as a person's is the second time they open it).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

PLAYWRIGHT_TIMEOUT_MS = 30_000  # Playwright's own default for a page's actions and waits


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else None


class Tabs:
    """A Chromium ``Browser`` whose contexts go back to the module's pool when closed (module docstring);
    anything else is the browser's own (``version``, ``contexts``, ...)."""

    def __init__(self, browser) -> None:
        self.browser = browser
        self._idle: dict[str, list[tuple[Any, Any]]] = {}  # options -> (context, page) kept for reuse
        self._lenders: dict[int, Context] = {}  # id(page) -> the context that lent it, until it is closed
        self.reused = 0  # how many contexts came from the pool (for the pool's own test)

    def new_context(self, **options) -> Context:
        key = repr(sorted(options.items()))
        kept = self._idle.get(key, [])
        while kept:
            context, page = kept.pop()
            if not page.is_closed():
                self.reused += 1
                return Context(self, key, context, page)
            _close_quietly(context)
        return Context(self, key, self.browser.new_context(**options), None)

    def close_context(self, page) -> None:
        """Close the context ``page`` belongs to (``page.context.close()``, with the tab kept when it can be)."""
        lender = self._lenders.get(id(page))
        if lender is not None:
            lender.close()
        else:
            page.context.close()

    def keep(self, key: str, context, page) -> None:
        self._idle.setdefault(key, []).append((context, page))

    def close(self) -> None:
        for kept in self._idle.values():
            for context, _ in kept:
                _close_quietly(context)
        self._idle.clear()

    def __getattr__(self, name: str):
        return getattr(self.browser, name)


class Context:
    """One person's browser context for one test; ``close()`` gives its tab back to the pool when it can be
    made new again, and closes it otherwise."""

    def __init__(self, tabs: Tabs, key: str, context, kept_page) -> None:
        self._tabs, self._key, self.context = tabs, key, context
        self._kept = kept_page
        self._lent: list[_Lent] = []
        self._closed = False

    def new_page(self):
        page = self._kept if self._kept is not None else self.context.new_page()
        self._kept = None
        self._lent.append(_Lent(page))
        self._tabs._lenders[id(page)] = self
        return page

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for lent in self._lent:
            self._tabs._lenders.pop(id(lent.page), None)
        if self._kept is not None:  # taken from the pool but never used: nothing to undo
            self._tabs.keep(self._key, self.context, self._kept)
            return
        if len(self._lent) == 1 and self._lent[0].reset(self.context):
            self._tabs.keep(self._key, self.context, self._lent[0].page)
        else:
            _close_quietly(self.context)

    def __getattr__(self, name: str):
        return getattr(self.context, name)


class _Lent:
    """A tab while one test has it: what was there before, what the test added, the sites it showed."""

    def __init__(self, page) -> None:
        self.page = page
        self.viewport = page.viewport_size
        self.origins: set[str] = set()
        self.scripts: list[Any] = []
        emitter = page._impl_obj  # Playwright's own listeners (close, crash) stay; the test's are removed
        self.listeners = {event: list(emitter.raw_listeners(event)) for event in emitter.event_names()}
        page.on("framenavigated", self._saw)  # removed in reset() with the test's own listeners
        add_init_script = page.add_init_script

        def add_and_note(script=None, path=None):
            disposable = add_init_script(script=script, path=path)
            self.scripts.append(disposable)
            return disposable

        page.add_init_script = add_and_note  # this tab only: its scripts are taken away again in reset()

    def _saw(self, frame) -> None:
        origin = _origin(frame.url)
        if origin and frame.parent_frame is None:
            self.origins.add(origin)

    def reset(self, context) -> bool:
        """Made new for the next test (module docstring); False when it cannot be: it is then closed."""
        page = self.page
        if page.is_closed() or len(self.origins) > 1:
            return False
        try:
            origin = _origin(page.url)
            if self.origins and origin not in self.origins:
                return False  # it left its site: that site's sessionStorage is out of reach
            if origin:  # this tab's sessionStorage can only be cleared from its own page
                page.evaluate("() => { localStorage.clear(); sessionStorage.clear(); }")
            page.unroute_all(behavior="ignoreErrors")
            page.goto("about:blank")
            if self.origins:  # whatever the page wrote as it unloaded, and the other kinds of storage
                cdp = context.new_cdp_session(page)
                try:
                    cdp.send("Storage.clearDataForOrigin", {"origin": next(iter(self.origins)), "storageTypes": "all"})
                finally:
                    cdp.detach()
            context.clear_cookies()
            context.clear_permissions()
            for script in self.scripts:
                script.close()
            del page.add_init_script
            emitter = page._impl_obj
            for event in emitter.event_names():
                before = self.listeners.get(event, [])
                for listener in emitter.raw_listeners(event):
                    if listener not in before:
                        emitter.remove_listener(event, listener)
            page.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
            if page.viewport_size != self.viewport and self.viewport is not None:
                page.set_viewport_size(self.viewport)
        except Exception:  # noqa: BLE001 - a tab that cannot be made new is closed instead
            return False
        return True


def _close_quietly(context) -> None:
    with contextlib.suppress(Exception):
        context.close()
