"""The page's components, grouped as ``build_demo`` lays them out (no layout, no events here).

A leaf of the page: the layout (``main``), the edit bar and earlier chats (``branches``) and the
API-only endpoints (``api``) all take a ``Page`` and import it from here, not from each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llava_app.chat.examples import Example
from llava_app.web.handlers.outputs import Views


@dataclass
class EditBar:
    """Shown while a question is edited: what is edited, which pictures stay with it, Cancel."""

    editing: gr.State  # the 0-based turn being edited, or None
    bar: gr.Row
    title: gr.Markdown
    keep: gr.CheckboxGroup
    cancel: gr.Button


@dataclass
class Chats:
    """The earlier chats of this browser, the hidden action channel, and the share controls."""

    listing: gr.HTML | None
    action: gr.Textbox
    go: gr.Button
    share: gr.Button | None
    share_info: gr.Markdown | None
    revoke: gr.Button | None
    link: gr.State | None


@dataclass
class StripControls:
    """The strip's own controls: the pictures, the limits, Clear all (asked first, with Undo after), the camera."""

    gallery: gr.Gallery
    limits: gr.Markdown
    notice: gr.Markdown
    clear: gr.Button
    confirm: gr.Row
    confirm_text: gr.Markdown
    clear_yes: gr.Button
    clear_no: gr.Button
    undo_clear: gr.Button
    camera: gr.Image
    camera_box: gr.Row
    camera_strip: gr.Button
    camera_close: gr.Button


@dataclass
class Picker:
    """The model picker's components."""

    dropdown: gr.Dropdown
    button: gr.Button
    status: gr.Markdown
    section: gr.Accordion | None = None  # shown per user on page load (``main._wire_preferences``)


@dataclass
class Page:
    """The page's components, as ``build_demo`` laid them out."""

    state: gr.State
    returned: gr.State  # the question a failed answer gives back, for the step that unlocks the controls
    browser_key: gr.BrowserState
    model_line: gr.Markdown
    banner: gr.Markdown
    picker: Picker | None
    gallery: gr.Gallery
    notice: gr.Markdown
    examples: list[tuple[Example, gr.Button]]
    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    undo: gr.Button
    new_chat: gr.Button
    meter: gr.Markdown
    system_prompt: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_new: gr.Slider
    prompt_stats: gr.Markdown
    prompt_view: gr.Textbox
    export_buttons: dict[str, gr.Button]
    import_button: gr.UploadButton
    export_file: gr.File
    limits: gr.Markdown
    settings_toggle: gr.Button
    frames: gr.Slider
    pages: gr.Textbox
    edit: EditBar
    chats: Chats
    strip: StripControls
    chats_toggle: gr.Button
    camera_open: gr.Button

    def outputs(self, kind: type[tuple]) -> list:
        """The components a handler's named result (``handlers.outputs``) fills, in the order of its fields."""
        named = {"state": self.state, "gallery": self.gallery, "question": self.question, "notice": self.notice,
                 "limits": self.limits, "chatbot": self.chatbot, "prompt_view": self.prompt_view,
                 "prompt_stats": self.prompt_stats, "meter": self.meter, "listing": self.chats.listing,
                 "editing": self.edit.editing, "edit_bar": self.edit.bar, "edit_title": self.edit.title,
                 "keep": self.edit.keep, "undo_clear": self.strip.undo_clear,
                 "confirm": self.strip.confirm, "camera": self.strip.camera, "camera_box": self.strip.camera_box}
        return [named[field] for field in kind._fields]

    @property
    def views(self) -> list:
        """What ``HandlerContext.views`` fills."""
        return self.outputs(Views)

    @property
    def settings(self) -> list:
        """The generation inputs: the conversation, then the system prompt and sampling settings."""
        return [self.state, self.system_prompt, self.temperature, self.top_p, self.max_new]

    @property
    def busy_controls(self) -> list:
        """Controls locked while an answer is written (Stop is the one unlocked)."""
        return [self.send, self.regenerate, self.undo, self.new_chat]
