"""Saved conversations seen from the chat: each live conversation saves to its browser's one.

``BrowserSaves`` ties live conversations to their browser's saved conversation in
``storage.saved.SavedConversations`` (a no-op without one), converting through the
one record (``Conversation.to_record`` / ``Conversation.restore``).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from typing import Any, Iterator

from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import SavedConversations, entry_key, is_browser_token, new_browser_token

log = logging.getLogger(__name__)


class BrowserSaves:
    """Ties live conversations to their browser's saved conversation; a no-op without ``saved``."""

    def __init__(self, saved: SavedConversations | None, store: ImageStore, partial_interval_s: float = 2.0):
        self.saved = saved
        self.store = store
        self.partial_interval_s = partial_interval_s  # how often an answer being written is saved
        self._owner: dict[str, str] = {}  # live conversation id -> its saved conversation's key
        self._tab: dict[str, str] = {}  # live conversation id -> the browser tab that holds it (when known)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when conversations are kept across reloads."""
        return self.saved is not None

    def secret(self) -> str | None:
        """The secret that signs the browser-side key (None with saving off)."""
        return self.saved.secret() if self.saved is not None else None

    def open(self, token: Any, username: str | None = None, tab: str | None = None
             ) -> tuple[str, Conversation | None, str | None]:
        """On page load: ``(token, restored conversation or None, question to put back in the box)``.

        A missing or malformed token is replaced by a new one (and nothing is loaded). ``tab``
        names the browser tab (kept across its reloads; see ``held_elsewhere``).
        """
        if self.saved is None:
            return "", None, None
        if not is_browser_token(token):
            return new_browser_token(), None, None
        record = self.saved.load(entry_key(token, username), self.store)
        if record is None:
            return token, None, None
        try:
            conv = Conversation.restore(record)
        except UserError:
            log.warning("a saved conversation could not be rebuilt; starting fresh")
            return token, None, None
        pending = None
        if conv.turns and conv.turns[-1].assistant is None:  # saved while its answer was being written
            pending = conv.retract()
        self.bind(conv, token, username, tab)
        return token, conv, pending

    def held_elsewhere(self, token: Any, username: str | None = None, tab: str | None = None) -> bool:
        """True when another tab of this browser holds its saved conversation live on this server.

        Opening it here too would let the two tabs save over each other's turns; a reload of
        the same tab (the same ``tab``) is not "elsewhere", nor is anything when ``tab`` is unknown.
        """
        if self.saved is None or not tab or not is_browser_token(token):
            return False
        key = entry_key(token, username)
        with self._lock:
            return any(owned == key and self._tab.get(conv_id, tab) != tab for conv_id, owned in self._owner.items())

    def bind(self, conv: Conversation, token: str, username: str | None = None, tab: str | None = None) -> None:
        """Save ``conv`` as this browser's conversation from now on (held by browser tab ``tab``)."""
        if self.saved is not None and is_browser_token(token):
            with self._lock:
                self._owner[conv.id] = entry_key(token, username)
                if tab:
                    self._tab[conv.id] = tab

    def rebind(self, old: Conversation, new: Conversation) -> None:
        """A new chat replaces the browser's conversation."""
        with self._lock:
            key, tab = self._owner.pop(old.id, None), self._tab.pop(old.id, None)
            if key is not None:
                self._owner[new.id] = key
                if tab:
                    self._tab[new.id] = tab

    def release(self, conv_id: str) -> None:
        """The conversation ended on the server; its saved copy stays."""
        with self._lock:
            self._owner.pop(conv_id, None)
            self._tab.pop(conv_id, None)

    def key_of(self, conv: Conversation) -> str | None:
        """The key a conversation saves under, if any."""
        with self._lock:
            return self._owner.get(conv.id)

    def save(self, conv: Conversation, key: str | None = None) -> None:
        """Save ``conv`` as its browser's conversation (no-op when it has none)."""
        key = key or self.key_of(conv)
        if self.saved is None or key is None:
            return
        try:
            self.saved.save(key, conv.to_record(with_prompt=True))
        except (OSError, sqlite3.Error):
            log.exception("saving a conversation failed; the live conversation is unaffected")

    def saving(self, chunks: Iterator[Any], conv: Conversation) -> Iterator[Any]:
        """Pass a stream through and save the conversation when it ends, however it ends.

        Text is the answer so far; anything else (the place in line) passes through untouched.

        The key is looked up now, so a tab closed mid-answer still saves the stopped answer.
        While the answer is written, its text so far is saved (on the first text, then every
        ``partial_interval_s``) marked ``interrupted``: if the server dies before the end,
        the page comes back with the half answer marked as cut off, not as complete.
        """
        key = self.key_of(conv)
        last = None
        try:
            for text in chunks:
                now = time.monotonic()
                if isinstance(text, str) and text and (last is None or now - last >= self.partial_interval_s):
                    last = now
                    self.save_partial(conv, text, key)
                yield text
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # lets stream_answer record the answer before it is saved
            self.save(conv, key)

    def save_partial(self, conv: Conversation, text: str, key: str | None = None) -> None:
        """Save ``conv`` with ``text`` as its pending answer, marked interrupted (until the real save)."""
        key = key or self.key_of(conv)
        if self.saved is None or key is None:
            return
        record = conv.to_record(with_prompt=True)
        if not record.turns or record.turns[-1].assistant is not None:
            return
        record.turns[-1] = dataclasses.replace(record.turns[-1], assistant=text, interrupted=True)
        try:
            self.saved.save(key, record)
        except (OSError, sqlite3.Error):
            log.exception("saving a partial answer failed; the live conversation is unaffected")

    def housekeep(self) -> None:
        """Housekeeping's share: sweep the saved conversations (retention, size cap) when due."""
        if self.saved is not None:
            self.saved.housekeep()

    def __len__(self) -> int:
        with self._lock:
            return len(self._owner)
