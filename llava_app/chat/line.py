"""The line in front of the engine: answers are written in the order they were asked, a few at a time.

The engine declares how many answers it writes at once (``Backend.max_concurrency``: the local
engine's batch, ``--max-batch``, or one where it cannot batch; many for a remote server). Every
answer (page, ``/chat``, ``/v1``) goes through one ``Line``, so the page can tell a person
where they stand ("2nd in line") instead of leaving them under an opaque spinner, and Stop
works while they wait.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from llava_app.errors import UserError


class Line:
    """First come, first served; at most ``capacity()`` holders at once."""

    def __init__(self, capacity: Callable[[], int], max_waiting: int | None = None):
        self.capacity = capacity
        #: more than this many waiting: a newcomer is told the line is full (None: no limit)
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._waiting: list[int] = []
        self._serving = 0
        self._tickets = itertools.count(1)

    def join(self) -> int:
        """A ticket at the end of the line; a full line refuses with a message."""
        with self._cond:
            if self.max_waiting is not None and len(self._waiting) >= self.max_waiting and \
                    self._serving >= max(1, self.capacity()):
                raise UserError("chat.queue_full", waiting=len(self._waiting))
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            return ticket

    def wait(self, ticket: int, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the ticket's turn: 0 once it is served, else its place (1 = next)."""
        with self._cond:
            self._cond.wait_for(lambda: self._can_serve(ticket), timeout=timeout_s)
            if self._can_serve(ticket):
                self._waiting.remove(ticket)
                self._serving += 1
                self._cond.notify_all()
                return 0
            return self._waiting.index(ticket) + 1

    def leave(self, ticket: int, served: bool) -> None:
        """The holder is done (``served``), or gave up waiting."""
        with self._cond:
            if served:
                self._serving -= 1
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    def __len__(self) -> int:
        """How many wait."""
        with self._cond:
            return len(self._waiting)

    def _can_serve(self, ticket: int) -> bool:
        return bool(self._waiting) and self._waiting[0] == ticket and self._serving < max(1, self.capacity())
