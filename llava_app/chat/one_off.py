"""Conversations that live for one request (the OpenAI-compatible ``/v1`` endpoint).

A client sends the whole conversation with every request: its turns, the pictures each
question brought (a picture may carry the number an "Image N:" label gave it) and the
answers so far, the last question unanswered. ``ChatService`` builds a ``Conversation``
from them exactly as a saved one is restored, answers it with ``stream_answer`` and ends
it with ``forget``; this module holds the building, and the facts about the model a client
may ask for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llava_app.chat.conversation import Conversation
from llava_app.storage.records import ConversationRecord, ImageRecord, TurnRecord

if TYPE_CHECKING:
    from PIL import Image

    from llava_app.engine.base import Backend
    from llava_app.storage.images import ImageStore


@dataclass
class ClientTurn:
    """One exchange as a client sent it: the question's text, its pictures in order (each with the
    number its label gave it, or None), and the answer (None for the last question)."""

    text: str
    pictures: list[tuple[int | None, Image.Image]] = field(default_factory=list)
    answer: str | None = None


def conversation_from_turns(store: ImageStore, turns: Sequence[ClientTurn]) -> Conversation:
    """Store every picture, number it (its label's number; else the next number no label took), and lay
    the turns out as the page would (``Conversation.restore``). Pictures are named "image 1", "image 2",
    ... in the order the request gave them."""
    record = ConversationRecord()
    used = {n for t in turns for n, _ in t.pictures if n}
    taken: set[int] = set()
    next_free, k = 1, 0
    for index, turn in enumerate(turns):
        for number, picture in turn.pictures:
            k += 1
            stored = store.put(picture)
            if not number or number in taken:  # unlabelled (or a repeated label): the next free number
                while next_free in used or next_free in taken:
                    next_free += 1
                number = next_free
            taken.add(number)
            record.images.append(ImageRecord(number=number, sha256=stored.sha256, width=stored.width,
                                             height=stored.height, turn=index, name=f"image {k}"))
            record.files[stored.sha256] = stored.path
        record.turns.append(TurnRecord(user=turn.text, assistant=turn.answer))
    return Conversation.restore(record)


class OneOffChats:
    """``ChatService``'s operations for conversations that live for one request."""

    backend: Backend
    store: ImageStore

    def one_off_conversation(self, turns: Sequence[ClientTurn]) -> Conversation:
        """A conversation built whole from a client's turns, its last question waiting for ``stream_answer``;
        end it with ``forget`` once answered (nothing is kept for it)."""
        return conversation_from_turns(self.store, turns)

    @property
    def context_length(self) -> int | None:
        """The served model's context window in tokens, when known (a remote server may not say)."""
        return self.backend.context_length or None
