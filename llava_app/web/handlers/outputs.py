"""What the handlers with many outputs return: named tuples whose fields are named after the page's
components they fill (``page.main.Page.outputs`` wires each field to its component, in this order).

Gradio takes them as the tuples they are; a handler builds one by name, and what it leaves alone is
``gr.skip()`` (``skipped``), so no handler counts outputs or slices another's.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

import gradio as gr

Result = TypeVar("Result", bound=tuple)


class Views(NamedTuple):
    """What the page shows of a conversation (``HandlerContext.views``)."""

    chatbot: Any
    prompt_view: Any
    prompt_stats: Any
    meter: Any


class Strip(NamedTuple):
    """The strip of pictures after one was added or removed (``HandlerContext.images``)."""

    gallery: Any
    state: Any
    notice: Any
    limits: Any
    meter: Any


class Captured(NamedTuple):
    """A camera photo taken into the strip: the strip, then the camera (emptied) and its box (closed)."""

    gallery: Any
    state: Any
    notice: Any
    limits: Any
    meter: Any
    camera: Any
    camera_box: Any


class Cleared(NamedTuple):
    """Clear all, or its Undo: the strip, what the page shows, the question (closed) and Undo (offered or not)."""

    gallery: Any
    state: Any
    notice: Any
    limits: Any
    chatbot: Any
    prompt_view: Any
    prompt_stats: Any
    meter: Any
    confirm: Any
    undo_clear: Any


class Attached(NamedTuple):
    """Files put in the question box, taken into the strip: the box (its text stays), then the strip."""

    question: Any
    gallery: Any
    state: Any
    notice: Any
    limits: Any
    meter: Any


class Asked(NamedTuple):
    """A question sent (``ChatHandlers.on_submit``): the box, the strip and what the page shows."""

    question: Any
    gallery: Any
    state: Any
    notice: Any
    limits: Any
    chatbot: Any
    prompt_view: Any
    prompt_stats: Any
    meter: Any


#: Send (``BranchHandlers.on_send``): a question asked, new or edited (``Asked``'s fields), and the edit bar
Sent = NamedTuple("Sent", [(name, Any) for name in (*Asked._fields, "editing", "edit_bar", "keep")])


class Action(NamedTuple):
    """A link of the chat or of the list of earlier chats, clicked (``BranchHandlers.on_action``)."""

    state: Any
    gallery: Any
    question: Any
    notice: Any
    listing: Any
    editing: Any
    edit_bar: Any
    edit_title: Any
    keep: Any
    chatbot: Any
    prompt_view: Any
    prompt_stats: Any
    meter: Any


def skipped(kind: type[Result]) -> Result:
    """A ``kind`` that leaves every one of its components as it is."""
    return kind(*[gr.skip() for _ in kind._fields])

