"""Saved conversations seen from the chat: each live conversation saves to its row of its browser's list.

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
from collections.abc import Iterator
from typing import Any

from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import SavedConversations, entry_key, is_browser_token, new_browser_token, new_row_key

log = logging.getLogger(__name__)


class BrowserSaves:
    """Ties live conversations to their browser's saved conversations; a no-op without ``saved``.

    A browser (its token, hashed with the signed-in user's name: ``entry_key``) owns a list of
    saved conversations; each live conversation saves to one row of it (``_rows``).
    """

    def __init__(self, saved: SavedConversations | None, store: ImageStore, partial_interval_s: float = 2.0):
        self.saved = saved
        self.store = store
        self.partial_interval_s = partial_interval_s  # how often an answer being written is saved
        self._rows: dict[str, tuple[str, str]] = {}  # live conversation id -> (its browser's key, its row)
        self._tab: dict[str, str] = {}  # live conversation id -> the browser tab that holds it (when known)
        #: a second tab's conversation (not saved: ``held_elsewhere``) -> its browser's key, to list and open
        self._readers: dict[str, str] = {}
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

        The browser's newest saved conversation comes back. A missing or malformed token is
        replaced by a new one (and nothing is loaded). ``tab`` names the browser tab (kept
        across its reloads; see ``held_elsewhere``).
        """
        if self.saved is None:
            return "", None, None
        if not is_browser_token(token):
            return new_browser_token(), None, None
        owner = entry_key(token, username)
        listing = self.saved.listing(owner)
        if not listing:
            return token, None, None
        conv, pending = self._restore(listing[0]["id"], owner)
        if conv is not None and tab:
            with self._lock:
                self._tab[conv.id] = tab
        return token, conv, pending

    def held_elsewhere(self, token: Any, username: str | None = None, tab: str | None = None) -> bool:
        """True when another tab of this browser holds the conversation ``open`` would restore, live here.

        Opening it here too would let the two tabs save over each other's turns; a reload of
        the same tab (the same ``tab``) is not "elsewhere", nor is anything when ``tab`` is unknown.
        """
        if self.saved is None or not tab or not is_browser_token(token):
            return False
        owner = entry_key(token, username)
        listing = self.saved.listing(owner)
        if not listing:
            return False
        newest = (owner, listing[0]["id"])
        with self._lock:
            return any(bound == newest and self._tab.get(conv_id, tab) != tab for conv_id, bound in self._rows.items())

    def _restore(self, row: str, owner: str) -> tuple[Conversation | None, str | None]:
        """Saved conversation ``row`` of browser ``owner`` as a live one bound to it, and its unanswered question."""
        record = self.saved.load(row, self.store, owner=owner) if self.saved is not None else None
        if record is None:
            return None, None
        try:
            conv = Conversation.restore(record)
        except UserError:
            log.warning("a saved conversation could not be rebuilt; starting fresh")
            return None, None
        pending = None
        if conv.turns and conv.turns[-1].assistant is None:  # saved while its answer was being written
            pending = conv.retract()
        with self._lock:
            self._rows[conv.id] = (owner, row)
        return conv, pending

    def bind(self, conv: Conversation, token: str, username: str | None = None, tab: str | None = None) -> None:
        """Save ``conv`` as a new conversation of this browser from now on (held by browser tab ``tab``)."""
        if self.saved is not None and is_browser_token(token):
            with self._lock:
                self._rows[conv.id] = (entry_key(token, username), new_row_key())
                if tab:
                    self._tab[conv.id] = tab

    def bind_reader(self, conv: Conversation, token: str, username: str | None = None, tab: str | None = None
                    ) -> None:
        """A second tab's ``conv`` is not saved, but its page lists the browser's earlier chats and opens them."""
        if self.saved is not None and is_browser_token(token):
            with self._lock:
                self._readers[conv.id] = entry_key(token, username)
                if tab:
                    self._tab[conv.id] = tab

    def bind_client(self, conv: Conversation, client: str, username: str | None = None) -> None:
        """An API client has no browser key: unless bound already, ``conv`` is listed under one of its session's."""
        if self.saved is not None and client:
            with self._lock:
                self._rows.setdefault(conv.id, (entry_key(f"api\0{client}", username), new_row_key()))

    def rebind(self, old: Conversation, new: Conversation) -> None:
        """A new chat (or an import) follows ``old`` in its browser's list; ``old`` stays in it."""
        with self._lock:
            bound, tab = self._rows.get(old.id), self._tab.pop(old.id, None)
            reader = self._readers.pop(old.id, None)
            if reader is not None:
                self._readers[new.id] = reader
            if bound is not None:
                self._rows[new.id] = (bound[0], new_row_key())
                if tab:
                    self._tab[new.id] = tab

    def release(self, conv_id: str) -> None:
        """The conversation ended on the server; its saved copy stays."""
        with self._lock:
            self._rows.pop(conv_id, None)
            self._tab.pop(conv_id, None)
            self._readers.pop(conv_id, None)

    def key_of(self, conv: Conversation) -> str | None:
        """The row a conversation saves to, if any."""
        with self._lock:
            bound = self._rows.get(conv.id)
        return bound[1] if bound else None

    def owner_of(self, conv: Conversation) -> str | None:
        """The key of the browser whose list ``conv`` is in, if any."""
        with self._lock:
            bound = self._rows.get(conv.id)
            return bound[0] if bound else self._readers.get(conv.id)

    def save(self, conv: Conversation, bound: tuple[str, str] | None = None) -> None:
        """Save ``conv`` to its row of its browser's list (no-op when it has none; an empty one leaves the list);
        ``bound`` is ``(browser key, row)`` looked up earlier."""
        with self._lock:
            owner, row = bound or self._rows.get(conv.id, (None, None))
        if self.saved is None or row is None:
            return
        try:
            if not (conv.turns or conv.images or conv.hidden):  # emptied (Undo took its one question back):
                self.saved.delete(row, owner)  # no entry of nothing is left in the list
                return
            self.saved.save(row, conv.to_record(with_prompt=True), owner=owner)
        except (OSError, sqlite3.Error):
            log.exception("saving a conversation failed; the live conversation is unaffected")

    # ----- the list of earlier chats ----------------------------------------------------------
    def limits(self) -> dict[str, Any]:
        """What the page says about the list: how long unused chats are kept, and the size cap of them all."""
        if self.saved is None:
            return {}
        return {"days": self.saved.retention_s / 86400, "max_mb": self.saved.max_bytes / 2**20}

    @property
    def files_dir(self) -> str | None:
        """Where the saved conversations' pictures are (the list's thumbnails); None with saving off."""
        return str(self.saved.files_dir) if self.saved is not None else None

    def listing(self, conv: Conversation) -> list[dict[str, Any]]:
        """The saved conversations of ``conv``'s browser, newest first (``current`` marks ``conv``'s own)."""
        owner = self.owner_of(conv)
        if self.saved is None or owner is None:
            return []
        row = self.key_of(conv)
        return [{**entry, "current": entry["id"] == row} for entry in self.saved.listing(owner)]

    def reopen(self, conv: Conversation, row: str) -> tuple[Conversation, str | None]:
        """Saved conversation ``row`` of ``conv``'s browser as a live conversation (``conv`` stays saved)."""
        owner = self.owner_of(conv)
        with self._lock:  # live in another tab: two tabs would save over each other's turns
            here = self._tab.get(conv.id)
            if any(bound == (owner, row) and self._tab.get(held) not in (None, here)
                   for held, bound in self._rows.items()):
                raise UserError("saved.open_elsewhere")
        restored, pending = self._restore(row, owner) if owner is not None else (None, None)
        if restored is None:
            raise UserError("saved.not_listed_maybe_deleted")
        return restored, pending

    def rename(self, conv: Conversation, row: str, title: str) -> None:
        """Title one of the browser's saved conversations."""
        owner = self.owner_of(conv)
        if self.saved is None or owner is None or not self.saved.rename(row, owner, title):
            raise UserError("saved.not_listed")

    def delete(self, conv: Conversation, row: str) -> None:
        """Delete one of the browser's saved conversations (deleting the open one leaves it unsaved until it
        changes)."""
        owner = self.owner_of(conv)
        if self.saved is None or owner is None or not self.saved.delete(row, owner):
            raise UserError("saved.not_listed")
        with self._lock:
            if self._rows.get(conv.id, (None, None))[1] == row:
                self._rows[conv.id] = (owner, new_row_key())

    def saving(self, chunks: Iterator[Any], conv: Conversation) -> Iterator[Any]:
        """Pass a stream through and save the conversation when it ends, however it ends.

        Text is the answer so far; anything else (the place in line) passes through untouched.
        The row is looked up now, so a tab closed mid-answer still saves the stopped answer.
        While the answer is written, its text so far is saved (on the first text, then every
        ``partial_interval_s``) marked ``interrupted``: if the server dies before the end,
        the page comes back with the half answer marked as cut off, not as complete.
        """
        with self._lock:
            bound = self._rows.get(conv.id)
        last = None
        try:
            for text in chunks:
                now = time.monotonic()
                if isinstance(text, str) and text and (last is None or now - last >= self.partial_interval_s):
                    last = now
                    self.save_partial(conv, text, bound)
                yield text
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # lets stream_answer record the answer before it is saved
            self.save(conv, bound)

    def save_partial(self, conv: Conversation, text: str, bound: tuple[str, str] | None = None) -> None:
        """Save ``conv`` with ``text`` as its pending answer, marked interrupted (until the real save)."""
        with self._lock:
            owner, row = bound or self._rows.get(conv.id, (None, None))
        if self.saved is None or row is None:
            return
        record = conv.to_record(with_prompt=True)
        if not record.turns or record.turns[-1].assistant is not None:
            return
        record.turns[-1] = dataclasses.replace(record.turns[-1], assistant=text, interrupted=True)
        try:
            self.saved.save(row, record, owner=owner)
        except (OSError, sqlite3.Error):
            log.exception("saving a partial answer failed; the live conversation is unaffected")

    def housekeep(self) -> None:
        """Housekeeping's share: sweep the saved conversations (retention, size cap) when due."""
        if self.saved is not None:
            self.saved.housekeep()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)
