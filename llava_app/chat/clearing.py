"""Clear all, and its Undo: every picture of the branch shown leaves the conversation, and can come back with
the same labels (the chat's "[Image 2, removed]" marks and each question's pictures as they were)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from llava_app.chat.conversation import Conversation
from llava_app.chat.parts import ImageRef


@dataclass(frozen=True)
class ClearedImages:
    """What ``clear_images`` took, for ``undo_clear``."""

    images: tuple[ImageRef, ...]
    removed: tuple[ImageRef, ...]  # the chat's "[Image 2, removed]" marks before the clear
    turn_images: dict[int, tuple[int, ...]]  # each turn's (by id) image numbers before the clear


def clear_images(conv: Conversation) -> ClearedImages:
    """Remove every picture of the branch shown; what it returns puts them back (``undo_clear``)."""
    with conv.lock:
        cleared = ClearedImages(tuple(conv.images), tuple(conv.removed),
                                {t.id: tuple(t.images) for t in conv.turns + conv.hidden if t.images})
        for im in list(conv.images):
            conv.remove_image(im.number)
    return cleared


def undo_clear(conv: Conversation, cleared: ClearedImages, max_images: int | None = None) -> list[str]:
    """Put back what ``clear_images`` took, with the same labels; returns the labels put back.

    A picture whose file is gone, added again since (same content), or past ``max_images`` stays out.
    """
    with conv.lock:
        taken = {im.number for im in conv.all_images()}
        shas = {im.sha256 for im in conv.images}
        back = [im for im in cleared.images if im.number not in taken and im.sha256 not in shas
                and im.joined_at <= len(conv.turns) and os.path.exists(im.path)]
        if max_images is not None:
            back = back[:max(max_images - len(conv.images), 0)]
        numbers = {im.number for im in back}
        conv.images = sorted(conv.images + back, key=lambda im: im.number)
        was_removed = {im.number for im in cleared.removed}
        conv.removed = [im for im in conv.removed if im.number not in numbers or im.number in was_removed]
        for turn in conv.turns + conv.hidden:
            before = set(cleared.turn_images.get(turn.id, ())) & numbers
            if before:
                turn.images = sorted(set(turn.images or ()) | before)
    return [im.label for im in back]
