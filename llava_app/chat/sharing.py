"""Share links: a read-only snapshot of the branch shown, made and revoked by the conversation's owner.

``ShareLinks`` turns a live conversation into the record of what it shows (the turns of the
branch shown that have answers, and their images; no other branch, no system prompt, no
pending question) and keeps it in ``storage.shares.Shares`` under its browser's key, so only
that browser may revoke it. Off unless the operator allows it (``--share-links``).
"""

from __future__ import annotations

import dataclasses

from llava_app.chat.conversation import Conversation
from llava_app.chat.saved import BrowserSaves
from llava_app.errors import UserError
from llava_app.storage.records import ConversationRecord
from llava_app.storage.shares import Shares


def shown_record(conv: Conversation, model: str = "") -> ConversationRecord:
    """What a snapshot shows: the answered turns of the branch shown and the images they brought."""
    record = conv.to_record(model=model)
    turns = [t for t in record.turns if t.assistant is not None]
    images = [im for im in record.images if 0 <= im.turn < len(turns)]
    return dataclasses.replace(
        record, turns=[dataclasses.replace(t, id=0, parent=0, images=None) for t in turns], images=images,
        branches=[], conversation_id="", next_number=max([1, *(im.number + 1 for im in images)]),
        files={im.sha256: record.files[im.sha256] for im in images if im.sha256 in record.files})


class ShareLinks:
    """Snapshots of conversations at unguessable URLs (``None`` store: sharing is off)."""

    def __init__(self, shares: Shares | None, saves: BrowserSaves):
        self.shares = shares
        self.saves = saves

    @property
    def enabled(self) -> bool:
        return self.shares is not None

    def _owner(self, conv: Conversation) -> str:
        # A browser's key where it has one (it may revoke from any tab, later); else this live conversation's.
        return self.saves.owner_of(conv) or f"conversation\0{conv.id}"

    def share(self, conv: Conversation, model: str = "") -> tuple[str, float]:
        """A snapshot of what ``conv`` shows now; returns ``(token, expires)`` (the URL is ``/share/<token>``)."""
        if self.shares is None:
            raise UserError("share.off")
        record = shown_record(conv, model)
        if not record.turns:
            raise UserError("share.nothing")
        return self.shares.create(record, self._owner(conv))

    def revoke(self, conv: Conversation, token: str) -> None:
        """Make the snapshot at ``token`` unreadable now (only its owner may)."""
        token = token.rstrip("/").rsplit("/", 1)[-1]  # the token, or the whole link
        if self.shares is None or not self.shares.revoke(token, self._owner(conv)):
            raise UserError("share.not_yours")

    def open(self, token: str) -> tuple[ConversationRecord, float] | None:
        """The snapshot at ``token`` and when it expires; None when unknown, expired or revoked."""
        return self.shares.get(token) if self.shares is not None else None

    def housekeep(self) -> None:
        if self.shares is not None:
            self.shares.sweep()
