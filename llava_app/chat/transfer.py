"""Conversations out of the chat and back in: export files of a live conversation, imports as a new one.

The files themselves are the storage layer's (``storage/export.py``, through the one
``ConversationRecord``); here a live ``Conversation`` becomes a record, and an imported
record becomes a conversation through ``Conversation.restore`` like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llava_app.chat.conversation import Conversation
from llava_app.storage.export import Regions, read_conversation, write_json, write_markdown, write_zip
from llava_app.storage.images import ImageLimits, ImageStore
from llava_app.storage.records import ConversationRecord

#: the file each kind of export is written to (a readable name for the download)
EXPORT_FILES = {"markdown": "conversation.md", "json": "conversation.json", "zip": "conversation-llamafactory.zip"}


@dataclass
class Imported:
    """What an import gives back: the conversation and the settings it was held with."""

    conversation: Conversation
    system_prompt: str | None  # None: the file has none (keep the page's)
    model: str


def export_conversation(kind: str, conv: Conversation, folder: str | Path, *, model: str = "",
                        system_prompt: str = "", pointed: Callable[[ConversationRecord], Regions] | None = None
                        ) -> Path:
    """Write the ``kind`` export (``markdown``, ``json`` or ``zip``) of ``conv`` into ``folder`` (``pointed``: what
    each answer points at, written beside it)."""
    record = conv.to_record(model=model, system_prompt=system_prompt)
    write = {"markdown": write_markdown, "json": write_json, "zip": write_zip}[kind]
    return write(record, Path(folder) / EXPORT_FILES[kind], regions=pointed(record) if pointed else None)


def import_conversation(path: str | Path, store: ImageStore, *, limits: ImageLimits = ImageLimits(),
                        max_images: int = 6) -> Imported:
    """A JSON file or zip exported by this app as a new conversation that continues where it stopped.

    Its images are decoded and stored as uploads are; a last question whose answer was
    never written is dropped (its images wait for the next question). Bad files raise a
    ``UserError`` that says what is wrong.
    """
    record = read_conversation(path, store, limits=limits, max_images=max_images)
    conv = Conversation.restore(record, max_images=max_images)
    if conv.turns and conv.turns[-1].assistant is None:
        conv.retract()
    return Imported(conversation=conv, system_prompt=record.system_prompt, model=record.model)
