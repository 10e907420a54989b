"""One cancel flag per asked-for answer: Stop, a closed tab or a new chat end it, wherever it is.

A flag is armed when the question is asked, so Stop works while the answer still waits
(in Gradio's queue or the engine's line); ``started`` marks that the service has taken it
up. The service asks here whether a conversation is busy (idle expiry spares it).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

#: a question right after a cancel: how long the cancel may take to arrive, and the stopped answer to end
STOP_NOTICE_S = 1.0
STOP_WAIT_S = 30.0


@dataclass
class _Run:
    """A generation that was asked for: its cancel flag, and whether the service began it."""

    cancel: threading.Event
    started: bool = False
    armed_at: float = dataclasses.field(default_factory=time.monotonic)


class Runs:
    """The armed generations, by conversation id (thread-safe)."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._active: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a run ended or was stopped

    def arm(self, conv_id: str, start: bool = False) -> threading.Event:
        """The cancel flag of this conversation's next (or current) generation; ``start`` marks it taken up."""
        with self._lock:
            run = self._active.get(conv_id)
            if run is None:
                run = self._active[conv_id] = _Run(threading.Event())
            run.started = run.started or start
            return run.cancel

    def is_running(self, conv_id: str) -> bool:
        """True once the generation was taken up, until it ends."""
        with self._lock:
            run = self._active.get(conv_id)
            return run is not None and run.started

    def stop(self, conv_id: str) -> bool:
        """Set the flag; True when there was one."""
        with self._lock:
            run = self._active.get(conv_id)
        if run is None:
            return False
        run.cancel.set()
        with self._changed:
            self._changed.notify_all()
        return True

    def settled(self, conv_id: str) -> bool:
        """True when no answer of the conversation is being written, after waiting for one that was stopped:
        a question while an answer is being written (a client that cancelled its request and asks again at
        once; Stop, then Send). The stop may still be on its way (``STOP_NOTICE_S``); a stopped answer ends
        within a few decode steps (``STOP_WAIT_S``)."""
        def running() -> _Run | None:
            run = self._active.get(conv_id)
            return run if run is not None and run.started else None

        with self._changed:
            self._changed.wait_for(lambda: (r := running()) is None or r.cancel.is_set(), STOP_NOTICE_S)
            run = running()
            if run is None or not run.cancel.is_set():
                return run is None
            return self._changed.wait_for(lambda: running() is None, STOP_WAIT_S)

    def release(self, conv_id: str, cancel: threading.Event) -> None:
        """Forget the run of this cancel flag (a newer run of the conversation is left alone)."""
        with self._lock:
            run = self._active.get(conv_id)
            if run is not None and run.cancel is cancel:
                del self._active[conv_id]
                self._changed.notify_all()

    def end(self, conv_id: str) -> None:
        """The conversation ended: stop its generation; a run never taken up is forgotten now."""
        with self._lock:
            run = self._active.get(conv_id)
            if run is not None:
                run.cancel.set()
                if not run.started:
                    del self._active[conv_id]  # a started run removes itself when its stream ends
                self._changed.notify_all()

    def busy(self, conv_id: str) -> bool:
        """Generating, or asked and waiting (for less than a time-to-live)."""
        with self._lock:
            run = self._active.get(conv_id)
            if run is None:
                return False
            return run.started or time.monotonic() - run.armed_at < self.ttl_s

    def drop_unstarted(self, conv_id: str) -> bool:
        """Forget a run that was never taken up (the queue refused it); False when one is running."""
        with self._lock:
            run = self._active.get(conv_id)
            if run is not None and run.started:
                return False
            self._active.pop(conv_id, None)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)
