"""The local engine in a process of its own: the model's thread does not share its interpreter with the web.

Why: the model's thread runs Python between its torch calls (every layer of every decode step), and
in one process it needs the interpreter's lock (the GIL) for each of them. The web server's threads
(Gradio's event loop, its workers, the handlers streaming each answer) hold that lock for a few
milliseconds per streamed chunk, and the model's thread waits at its next op each time. Measured
in-process on the bench model, 4 sequences decoding together: a thread of pure Python busy 2 ms in
every 12 ms slowed the answers by 13%, the same work in another process by 0-3%. Through the web
stack, a step of 4 took 42-46 ms in the app's process against 35 ms with no web stack beside it. The
serving engines split the same way (vLLM's engine core runs apart from its API server).

``EngineProcess`` is a ``Backend``: it starts a child process (``spawn``) that loads ``LocalBackend``
and serves it over a pipe. The parent never imports torch. Messages are small tuples:

* parent → child: ``("stream", rid, messages, params, session_id, new_branch)``, ``("cancel", rid)``,
  ``("call", cid, method, args)`` (prompt_info, count_tokens, image_resolution), ``("forget", session_id)``,
  ``("close",)``;
* child → parent: ``("ready", facts)`` or ``("failed", error)`` once at start, then ``("event", rid, event)``,
  ``("end", rid, error_or_None)`` and ``("reply", cid, ok, value)``.

A request's ``cancel`` (Stop, a closed tab) is looked at by the thread reading its stream after each event
(a decoding sequence has one per step) and, while none comes (in line, prefilling), every ``CANCEL_POLL_S``,
and sent on at once, so Stop still ends a sequence within a decode step or two; text the child made before
the Stop reached it is not passed on (as in the app's process, where the reader stops at once). If the child
dies, every waiting request ends with an ``EngineError`` and the web server goes on. Errors cross the
pipe as the project's own (``UserError``, ``EngineError``), their messages intact. The child runs at a
lower CPU priority (``ENGINE_NICE``), so the web's short bursts of work are not queued behind its steps.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

from llava_app.engine.base import Backend, ChatRequest, Event, PromptInfo, TextDelta
from llava_app.errors import EngineError, UserError
from llava_app.faults import traceback_only

log = logging.getLogger(__name__)

#: how often the thread reading a stream looks at its request's ``cancel`` while no event comes (it looks after
#: each event too). Not shorter: at 5 ms, 4 answers streaming woke the web server 800 times a second; the web
#: server's CPU per at-once round of the concurrency benchmark (3-4 rounds each, side by side): 0.74-0.98 s at
#: 5 ms, 0.61-0.64 s at 100 ms; later, the machine slower: 1.07-1.20 s at 5 ms, 0.91-1.15 s at 50 ms
CANCEL_POLL_S = 0.05
#: how long the child may take to load the model before the app gives up
START_TIMEOUT_S = 1800.0
#: how much lower than the web server's the model process's CPU priority is (``nice``): the web's work is
#: short and latency-bound (a newcomer's upload and prompt, the streamed chunks), the model's steady; on the
#: 2-core CPU a request arriving while 3 decode waited 1.64x its time alone at 0, 1.44x at 5 (one run each)
ENGINE_NICE = 5
#: the facts ``EngineProcess`` copies from the child's ``LocalBackend``
FACTS = ("model_name", "is_random", "context_length", "max_concurrency", "supports_images", "counts_tokens")


def _portable(exc: BaseException) -> BaseException:
    """An error the other process can unpickle with its message: the project's own pass as they are."""
    if isinstance(exc, (UserError, EngineError)) and type(exc).__module__.startswith("llava_app"):
        try:
            import pickle

            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - an error with arguments pickle cannot rebuild
            pass
        return (UserError if isinstance(exc, UserError) else EngineError)(str(exc))
    return EngineError(f"The model process failed ({type(exc).__name__}: {exc}).")


def _for_parent(exc: BaseException, what: str) -> BaseException:
    """``exc`` as the parent will raise it. An unexpected one is logged here first, with its traceback (which
    does not cross the pipe) and without its message, as the web server logs its own."""
    if not isinstance(exc, UserError):
        log.error("%s failed in the model process: %s", what, type(exc).__name__, exc_info=traceback_only(exc))
    return _portable(exc)


# ----- the child ---------------------------------------------------------------------------------
def serve(conn, kwargs: dict[str, Any], store_root: str, log_level: int) -> None:
    """The child's main: load the engine, then serve the parent until it says close (or goes away)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the parent ends us
    if hasattr(os, "nice"):  # the web's short bursts (an upload, a streamed chunk) come first
        os.nice(ENGINE_NICE)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.storage.images import ImageStore

    try:
        backend = LocalBackend(image_store=ImageStore(store_root), **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the parent raises it where the engine is made
        conn.send(("failed", _for_parent(exc, "loading the model")))
        return
    conn.send(("ready", {name: getattr(backend, name) for name in FACTS}))
    Child(conn, backend).run()


class Child:
    """The child's side: one thread reads the pipe; each stream and call runs in a thread of its own."""

    def __init__(self, conn, backend):
        self.conn, self.backend = conn, backend
        self.send_lock = threading.Lock()
        self.cancels: dict[int, threading.Event] = {}

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.conn.send(message)

    def run(self) -> None:
        try:
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):  # the parent is gone
                    break
                kind = message[0]
                if kind == "close":
                    break
                if kind == "stream":
                    rid = message[1]
                    self.cancels[rid] = threading.Event()
                    threading.Thread(target=self.stream, args=message[1:], name="llava-engine-stream",
                                     daemon=True).start()
                elif kind == "cancel":
                    cancel = self.cancels.get(message[1])
                    if cancel is not None:
                        cancel.set()
                        if self.backend.scheduler is not None:
                            self.backend.scheduler.wake()
                elif kind == "call":
                    threading.Thread(target=self.call, args=message[1:], daemon=True).start()
                elif kind == "forget":
                    self.backend.forget(message[1])
        finally:
            self.backend.close()

    def stream(self, rid: int, messages, params, session_id: str, new_branch: bool) -> None:
        request = ChatRequest(messages, params, session_id=session_id, cancel=self.cancels[rid], new_branch=new_branch)
        error = None
        try:
            for event in self.backend.stream(request):
                self.send(("event", rid, event))
        except BaseException as exc:  # noqa: BLE001 - the parent's consumer raises it
            error = _for_parent(exc, "an answer")
        finally:
            self.cancels.pop(rid, None)
        try:
            self.send(("end", rid, error))
        except (OSError, ValueError):  # the parent is gone
            pass

    def call(self, cid: int, method: str, args: tuple) -> None:
        try:
            reply = ("reply", cid, True, getattr(self.backend, method)(*args))
        except BaseException as exc:  # noqa: BLE001 - raised in the parent's caller
            reply = ("reply", cid, False, _for_parent(exc, method))
        try:
            self.send(reply)
        except (OSError, ValueError):
            pass


# ----- the parent --------------------------------------------------------------------------------
class EngineProcess(Backend):
    """``LocalBackend`` in a child process, behind the same interface (see the module docstring).

    ``kwargs`` are ``LocalBackend``'s (``model``, ``device``, ...), ``store_root`` the image store's folder:
    the child opens the pictures the conversations name from the same files.
    """

    def __init__(self, kwargs: dict[str, Any], store_root: str, start_timeout: float = START_TIMEOUT_S):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # not fork: the parent has threads (and maybe CUDA)
        self._conn, child_conn = context.Pipe()
        self._send_lock = threading.Lock()
        self._streams: dict[int, queue.SimpleQueue] = {}
        self._calls: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count(1)
        self._gone: BaseException | None = None
        self._resolution: Any = ...
        self.process = context.Process(target=serve, name="llava-engine", daemon=True,
                                       args=(child_conn, kwargs, str(store_root), logging.getLogger().level))
        self.process.start()
        child_conn.close()
        if not self._conn.poll(start_timeout):
            self.process.kill()
            raise EngineError("The model process did not start in time.")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self.process.join(5)
            raise EngineError(f"The model process ended while loading (exit code {self.process.exitcode}).") from None
        if kind == "failed":
            self.process.join(30)
            raise value
        for name, fact in value.items():
            setattr(self, name, fact)
        self._reader = threading.Thread(target=self._read, name="llava-engine-reader", daemon=True)
        self._reader.start()

    def _send(self, message: tuple) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError):
            raise EngineError("The model process is not running; restart the app.") from None

    def _read(self) -> None:
        """Hand each message to the stream or call waiting for it; when the child is gone, end them all."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind, key = message[0], message[1]
            if kind in ("event", "end"):
                waiting = self._streams.get(key)
                if waiting is not None:
                    waiting.put(message)
            elif kind == "reply":
                waiting = self._calls.get(key)
                if waiting is not None:
                    waiting.put(message)
        self._gone = EngineError("The model process stopped; restart the app.")
        for waiting in [*self._streams.values(), *self._calls.values()]:
            waiting.put(("end", None, self._gone))

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        if request.cancel.is_set():
            return
        rid, inbox = next(self._ids), queue.SimpleQueue()
        self._streams[rid] = inbox
        ended = cancelled = False
        try:
            self._send(("stream", rid, request.messages, request.params, request.session_id, request.new_branch))
            while True:
                if request.cancel.is_set() and not cancelled:
                    cancelled = True
                    self._send(("cancel", rid))
                try:
                    kind, _, value = inbox.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if kind == "end":
                    ended = True
                    if value is not None:
                        raise value
                    return
                if cancelled and isinstance(value, TextDelta):
                    continue  # text the child made before the Stop reached it: as in the app's process, not shown
                yield value
        finally:
            if not ended and self._gone is None:  # the consumer stopped early: the child's sequence stops too
                try:
                    self._send(("cancel", rid))
                except EngineError:
                    pass
            self._streams.pop(rid, None)

    def _call(self, method: str, *args) -> Any:
        cid, inbox = next(self._ids), queue.SimpleQueue()
        self._calls[cid] = inbox
        try:
            self._send(("call", cid, method, args))
            message = inbox.get()
        finally:
            self._calls.pop(cid, None)
        if message[0] == "end":  # the child went away
            raise message[2]
        _, _, ok, value = message
        if not ok:
            raise value
        return value

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        return self._call("prompt_info", messages)

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._call("count_tokens", messages)

    def image_resolution(self):
        if self._resolution is ...:  # the processor's size does not change: asked once
            self._resolution = self._call("image_resolution")
        return self._resolution

    def forget(self, session_id: str) -> None:
        try:
            self._send(("forget", session_id))
        except EngineError:
            pass

    def close(self) -> None:
        try:
            self._send(("close",))
        except EngineError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._conn.close()
