"""Which conversations are alive on this server, and the end of those that are not.

The page keeps each conversation in ``gr.State``; the API keeps one per client. A
conversation holds things outside itself: image files on disk (shared between
conversations, the store is content-addressed), model caches keyed by its id, a cancel
flag. ``Sessions`` knows the live conversations (held weakly, so it never keeps one
alive), when each was last used, and which browser tab or API client it belongs to. A
conversation ends when its tab closes, when it is replaced (New chat), when it is idle
past the time-to-live, or when Gradio drops it; its owner is then told (``on_end``) and
its images stop counting as used, so the next sweep of the store can delete them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from llava_app.chat.conversation import Conversation

log = logging.getLogger(__name__)


class Sessions:
    """A weak registry of live conversations with idle expiry.

    Args:
        on_end: called with a conversation id once when it ends (stop its generation,
            drop its model caches).
        ttl_s: a conversation unused this long ends.
        busy: a conversation for which this returns True (an answer being written) is
            not ended for idleness.
    """

    def __init__(self, on_end: Callable[[str], None], ttl_s: float = 3600.0,
                 busy: Callable[[str], bool] = lambda conv_id: False, close_grace_s: float | None = None):
        self.on_end = on_end
        self.ttl_s = ttl_s
        self.busy = busy
        #: a closed tab that does not come back within this long is gone for good
        self.close_grace_s = min(60.0, ttl_s) if close_grace_s is None else close_grace_s
        #: called with a client's session hash once it is gone (all its conversations ended)
        self.on_client_gone: Callable[[str], None] = lambda client: None
        self._convs: weakref.WeakValueDictionary[str, Conversation] = weakref.WeakValueDictionary()
        self._seen: dict[str, float] = {}
        self._client_of: dict[str, str] = {}  # conversation id -> Gradio session hash
        self._clients: dict[str, float] = {}  # session hash -> last activity
        self._closed: dict[str, float] = {}  # session hash -> when its tab closed
        self._gone: list[str] = []  # collected by the garbage collector, not yet ended
        self._lock = threading.RLock()

    def touch(self, conv: Conversation, client: str | None = None) -> None:
        """Record that ``conv`` is in use (by browser tab or API client ``client``, when known)."""
        now = time.monotonic()
        with self._lock:
            if conv.id not in self._convs:
                self._convs[conv.id] = conv
                # Whatever way the conversation goes (a Gradio state expiring, a session evicted),
                # its resources follow. The finalizer only queues: it may run inside any lock.
                weakref.finalize(conv, self._gone.append, conv.id)
            self._seen[conv.id] = now
            if client:
                self._client_of[conv.id] = client
            client = self._client_of.get(conv.id)
            if client:
                self._clients[client] = now
                self._closed.pop(client, None)  # it came back (a reconnect after a network blip)

    def end(self, conv_id: str) -> bool:
        """End one conversation now; False when it was not live."""
        with self._lock:
            was_live = self._seen.pop(conv_id, None) is not None
            self._convs.pop(conv_id, None)
        if was_live:
            self.on_end(conv_id)
        return was_live

    def close_client(self, client: str) -> bool:
        """A browser tab closed: end its conversations now (a reload restores them from their saved copy).

        Returns False for a client already gone (e.g. idle past the time-to-live before its
        connection dropped).
        """
        with self._lock:
            if client not in self._clients:
                return False
            ids = [i for i, c in self._client_of.items() if c == client]
            self._closed[client] = time.monotonic()
        for i in ids:
            self.end(i)
        return True

    def reap(self, now: float | None = None) -> list[str]:
        """End conversations idle past the time-to-live or already collected; returns their ids.

        Then clients with no live conversation left, idle past the time-to-live or closed
        past the grace period, are gone: ``on_client_gone`` frees what Gradio keeps for them.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            gone, self._gone = self._gone, []
            idle = [i for i, seen in self._seen.items() if now - seen >= self.ttl_s]
        ended = [i for i in gone if self.end(i)]
        ended += [i for i in idle if not self.busy(i) and self.end(i)]
        with self._lock:
            live_clients = {self._client_of.get(i) for i in self._seen}
            departed = [c for c, seen in self._clients.items() if c not in live_clients and (
                now - seen >= self.ttl_s or now - self._closed.get(c, float("inf")) >= self.close_grace_s)]
            for c in departed:
                self._clients.pop(c, None)
                self._closed.pop(c, None)
            self._client_of = {i: c for i, c in self._client_of.items() if c not in departed}
        for c in departed:
            self.on_client_gone(c)
        if ended or departed:
            log.info("ended %d conversation(s) and %d client session(s); %d live", len(ended), len(departed),
                     len(self))
        return ended

    def live(self) -> list[Conversation]:
        """The live conversations."""
        with self._lock:
            return [c for c in (self._convs.get(i) for i in list(self._seen)) if c is not None]

    def images_in_use(self) -> set[str]:
        """Content hashes of every image a live conversation holds."""
        used = set()
        for conv in self.live():
            with conv.lock:
                used.update(im.sha256 for im in conv.all_images())
        return used

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class Janitor:
    """A daemon thread that calls ``work()`` of an object every ``interval_s`` while the object lives."""

    def __init__(self, owner: object, work: str, interval_s: float):
        self._owner = weakref.ref(owner)
        self._work = work
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llava-janitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            owner = self._owner()
            if owner is None:
                return
            try:
                getattr(owner, self._work)()
            except Exception:  # noqa: BLE001 - housekeeping must never stop
                log.exception("housekeeping failed")
            del owner

    def stop(self) -> None:
        """Stop the thread (it finishes within one interval)."""
        self._stop.set()
