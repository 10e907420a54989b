"""The one place that touches Gradio's private fields, checked before use.

Gradio keeps every session's state and a copy of the page config (about 100 KB here)
until 10,000 sessions have passed, and a closed tab's state for an hour: memory that
grows with the sessions that have come and gone. The public knobs (``gr.State``'s
``time_to_live``/``delete_callback``, ``demo.unload``, ``launch(state_session_capacity=)``)
end our conversations but do not free those records once a client is gone, so this
module frees them through ``demo.state_holder`` and ``demo._queue``. Before the first
use it checks that those fields have the shape it expects (they may change in a Gradio
upgrade); if not, it logs one warning and this optimisation stays off: the app still
works, it only keeps Gradio's records longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

#: attribute -> the members it must have
_EXPECTED = {
    "state_holder": ("session_data", "time_last_used", "lock", "delete_state"),
    "_queue": ("pending_event_ids_session", "pending_messages_per_session"),
}


def missing_fields(demo: Any) -> list[str]:
    """The private fields this module needs that ``demo`` lacks (empty when all are there)."""
    missing = []
    for name, members in _EXPECTED.items():
        holder = getattr(demo, name, None)
        if holder is None:
            missing.append(name)
            continue
        missing += [f"{name}.{m}" for m in members if not hasattr(holder, m)]
    return missing


def without_load_event(state: Any) -> Any:
    """``state`` (a ``gr.State`` built from a factory) without the page-load event Gradio adds for it.

    Gradio calls a ``gr.State``'s factory lazily for each session's first use, and also adds a
    queued page-load event that sets the state to a fresh value. That event races the page's
    own load handler, which puts the browser's saved conversation into the same state: when
    Gradio's event ends last, the page shows the restored chat while the server holds an empty
    conversation (Regenerate answers "There is no answer to regenerate yet", the next question
    has no history, nothing more is saved). The lazy first value stays; only the event goes.
    Checked before use: without the field, one warning, and the race is back.
    """
    if not hasattr(state, "load_event_to_attach"):
        log.warning("this Gradio version has no State.load_event_to_attach: its page-load event for the "
                    "conversation state may overwrite a restored conversation")
        return state
    state.load_event_to_attach = None
    return state


class GradioSessions:
    """Frees what Gradio keeps per session once our housekeeping knows its client is gone."""

    def __init__(self, demo: Any):
        self.demo = demo
        self.loop: asyncio.AbstractEventLoop | None = None
        self._enabled: bool | None = None  # decided at first use, once the app is launched

    def remember_loop(self) -> None:
        """Called from an event handler: Gradio's records are touched only on its event loop."""
        self.loop = asyncio.get_running_loop()

    def enabled(self) -> bool:
        """Whether Gradio has the fields this needs (checked once; one warning when not)."""
        if self._enabled is None:
            missing = missing_fields(self.demo)
            self._enabled = not missing
            if missing:
                log.warning("this Gradio version lacks %s: closed sessions' records are kept until Gradio drops "
                            "them itself", ", ".join(missing))
        return self._enabled

    def drop(self, session_hash: str) -> None:
        """Free a gone client's records soon (thread-safe; a no-op before any event ran)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.drop_now, session_hash)

    def drop_later(self, session_hash: str, delay_s: float) -> None:
        """``drop_now`` after ``delay_s`` (on the running event loop)."""
        asyncio.get_running_loop().call_later(delay_s, self.drop_now, session_hash)

    def drop_now(self, session_hash: str) -> None:
        """Free the records on the event loop; retried later while the session has events in flight."""
        if not self.enabled():
            return
        holder, queue = self.demo.state_holder, self.demo._queue
        if session_hash not in holder.session_data:
            return
        if queue.pending_event_ids_session.get(session_hash):
            self.drop_later(session_hash, 5.0)  # events still in flight
            return
        holder.delete_state(session_hash)
        with holder.lock:
            holder.session_data.pop(session_hash, None)
            holder.time_last_used.pop(session_hash, None)
        queue.pending_event_ids_session.pop(session_hash, None)  # the session's (empty) message queue
        messages = queue.pending_messages_per_session.get(session_hash)
        if messages is not None and messages.empty():
            queue.pending_messages_per_session.pop(session_hash, None)


#: how often Gradio's queue looks for a new event when it has none (Gradio's own: every millisecond)
QUEUE_POLL_S = 0.01


def poll_queue_less(demo: Any, seconds: float = QUEUE_POLL_S) -> None:
    """Gradio's queue looks for new events every millisecond when it has none, in a loop on the event loop:
    9.5% of a core for a server that does nothing (measured here), and a thousand wake-ups a second
    that take the GIL from the model's thread while it writes answers. Every 10 ms instead: an event
    starts at most 10 ms later (invisible beside a model's answer), the idle server costs 3.2%.
    After ``demo.queue()``; checked before use: without the field, one warning, Gradio's own rate.
    """
    queue = getattr(demo, "_queue", None)
    if queue is None or not isinstance(getattr(queue, "sleep_when_free", None), (int, float)):
        log.warning("this Gradio version has no Queue.sleep_when_free: its queue keeps polling every millisecond")
        return
    queue.sleep_when_free = max(queue.sleep_when_free, seconds)


def skip_absent_matplotlib() -> None:
    """Gradio tries ``import matplotlib`` twice per call of a function, every step of a stream included.

    Without matplotlib each try searches ``sys.path`` again (a failed import is not remembered):
    a couple of milliseconds of the event loop per streamed update. Marking the absent module as
    absent (``None`` in ``sys.modules``) makes those imports fail at once; where matplotlib is
    installed nothing changes.
    """
    import importlib.util
    import sys

    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


#: how long Gradio's start-up check may wait for the new server to answer, and each of its tries
STARTUP_CHECK_S, STARTUP_TRY_S = 60.0, 3.0


def url_answers(url: str, deadline_s: float = STARTUP_CHECK_S, try_s: float = STARTUP_TRY_S) -> bool:
    """Gradio's check that the server it just started answers (``networking.url_ok``), patient with a slow one.

    Gradio gives up at the first request that takes over 3 s and then refuses to start ("When localhost is not
    accessible, a shareable link must be created"): a server on a busy machine (two cores shared with a model
    loading beside it, a test suite) can take that long to render its first page. Here a slow answer is asked
    again until ``deadline_s``; a refused connection still fails at once, and so do five wrong answers.
    """
    import time

    import httpx

    end, wrong = time.monotonic() + deadline_s, 0
    while True:
        try:
            status = httpx.head(url, timeout=try_s, verify=False).status_code
        except httpx.TimeoutException:
            status = None
        except (ConnectionError, httpx.ConnectError):
            return False
        if status in (200, 401, 301, 302, 303, 307, 308):  # Gradio's (401, 30x: a login or a redirect)
            return True
        wrong += status is not None
        if wrong >= 5 or time.monotonic() >= end:
            return False
        time.sleep(0.5)


def patient_startup_check() -> None:
    """Gradio's start-up check waits for a slow server (``url_answers``); checked before use, as above."""
    from gradio import networking

    if not callable(getattr(networking, "url_ok", None)):
        log.warning("this Gradio version has no networking.url_ok: its own start-up check is used")
        return
    networking.url_ok = url_answers


class _NoStubsAtImport(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as usual; once it has run, its stub writer does nothing (then leaves)."""

    MODULE = "gradio.component_meta"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.MODULE:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            if callable(getattr(module, "create_or_modify_pyi", None)):
                module.create_or_modify_pyi = _no_stubs

        loader.exec_module = exec_module
        return spec


def _no_stubs(*args, **kwargs) -> None:
    """Gradio's ``create_or_modify_pyi``, left out (see ``no_stubs_at_import``)."""


def no_stubs_at_import() -> None:
    """``import gradio`` without Gradio rewriting its own type stubs, a third of the import's time.

    For each of its ~80 component classes, Gradio's ``ComponentMeta`` reads the class's source file,
    parses it twice and renders a template, to keep the ``.pyi`` beside it (for editors) up to date:
    1.6-1.8 of 4.1-4.6 CPU-s of ``import gradio`` here (Python 3.11), in every process that starts
    the app. Nothing at run time reads those stubs. Called before gradio is imported (by this
    package's ``__init__``), a finder leaves that step out; after, or where Gradio has no such
    function, gradio imports as it always did.
    """
    if "gradio" in sys.modules or any(isinstance(f, _NoStubsAtImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _NoStubsAtImport())


#: how deep this thread is in ``app_made_at_launch`` (Gradio's app is not built while it is in one)
_building = threading.local()


def _skipped_while_building(create):
    """``App.create_app`` that builds nothing (returns None) in a thread inside ``app_made_at_launch``."""

    def create_app(*args, **kwargs):
        if getattr(_building, "depth", 0):
            return None
        return create(*args, **kwargs)

    create_app.skips_while_building = True
    return create_app


@contextlib.contextmanager
def app_made_at_launch() -> Iterator[None]:
    """Gradio's FastAPI app built once, at ``launch()``, not also before it: a third of a launch's CPU.

    Gradio builds its app (FastAPI, about 80 routes, each with its pydantic models) when a ``Blocks`` is
    made (its ``__init__`` calls ``queue()``), when its ``with`` block ends, when ``queue()`` is called and
    at ``launch()``; only the last is served. Building the page and queueing it inside this context, in this
    thread, leaves the first three out: 0.57 of 1.26 CPU-s per launch here (``demo.app`` is None until
    ``launch()``). Other threads build as before; checked before use: without the method, one warning.
    """
    from gradio.routes import App

    current = App.__dict__.get("create_app")
    if not isinstance(current, staticmethod):
        log.warning("this Gradio version has no App.create_app: its app is built at every step up to launch")
        yield
        return
    if not getattr(current.__func__, "skips_while_building", False):
        App.create_app = staticmethod(_skipped_while_building(current.__func__))
    _building.depth = getattr(_building, "depth", 0) + 1
    try:
        yield
    finally:
        _building.depth -= 1


def hidden_progress_to(demo: Any, component: Any) -> None:
    """Every event of ``demo`` that shows no progress (``show_progress="hidden"``) sends its statuses to
    ``component`` (one the page never draws) instead of to its outputs.

    Gradio's page hands each status of an event (pending, every streamed update, done) to every component that
    any event has ever had as an output, and each hand-over copies that component's whole value (and the value of
    everything under a row or column) out of its live props: on every streamed token of an answer a deep copy of
    the chat, the strip, the prompt and some 30 more (an event's inputs join them when it ends: those stay).
    Measured in Chromium, the page's renderer: three questions about two pictures 2.0-2.2 CPU-s before, 1.5-1.6
    after; over ten questions 0.66 CPU-s a question before, 0.53 after. Nothing is lost: a hidden progress draws
    nothing. Uses ``show_progress_on``, an event's public setting, once the events are made."""
    for fn in demo.fns.values():
        if fn.show_progress == "hidden" and not fn.show_progress_on:
            fn.show_progress_on = [component]
