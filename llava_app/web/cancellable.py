"""Drive a blocking generator from async code, so a cancelled request stops the model.

Gradio (and any ASGI server) cancels the task of a request whose client went away or
pressed cancel. A blocking generator iterated step by step from that task would be left
suspended, holding the model lock, with its ``finally`` never run. Here the generator
runs to its end in a worker thread of its own; the async side only reads what it
produced, and on cancellation calls ``on_cancel`` (which sets the request's cancel flag,
so the model stops within a decode step and the worker finishes on its own).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import anyio

T = TypeVar("T")
_END = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]], on_cancel: Callable[[], None]) -> AsyncIterator[T]:
    """Yield what ``make()`` yields; a slow reader gets only the newest item.

    Exceptions raised by the generator are re-raised here.
    """
    items: queue.Queue = queue.Queue()

    def worker() -> None:
        try:
            for item in make():
                items.put((True, item))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the async side
            items.put((False, exc))
        finally:
            items.put((True, _END))

    # The worker sees this request's context variables (gradio's request: ZeroGPU reads
    # it to charge the visitor's GPU quota rather than the Space's).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(worker,), name="llava-stream", daemon=True).start()
    finished = False
    pending = None
    try:
        while True:
            if pending is not None:
                (ok, item), pending = pending, None
            else:
                ok, item = await anyio.to_thread.run_sync(items.get, abandon_on_cancel=True)
            while ok and item is not _END:  # coalesce: skip to the newest item
                try:
                    nxt = items.get_nowait()
                except queue.Empty:
                    break
                if not nxt[0] or nxt[1] is _END:
                    pending = nxt
                    break
                item = nxt[1]
            if not ok:
                finished = True
                raise item
            if item is _END:
                finished = True
                return
            yield item
    finally:
        if not finished:
            on_cancel()
