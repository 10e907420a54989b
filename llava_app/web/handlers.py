"""The page's and the API's event handlers: one class, one method per event.

``build_demo`` wires these methods to the page's components; tests call them directly,
without launching a server. Each handler does one thing through the app's parts (the
service, the saved conversations, the feedback log) and turns the project's errors into
page messages here, escaped, never a traceback.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any, AsyncIterator, Callable

import anyio
import gradio as gr

from llava_app.application import App
from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import Example, language_of, load_example
from llava_app.errors import UserError
from llava_app.web import views
from llava_app.web.branching import BranchingHandlers
from llava_app.web.gradio_compat import GradioSessions
from llava_app.web.i18n import T, model_line
from llava_app.web.streaming import iterate_in_thread

log = logging.getLogger(__name__)


def upload_files(value: Any) -> list[tuple[str, str]]:
    """Paths and names of newly uploaded gallery items (ours carry an "Image N" caption)."""
    files = []
    for item in value or []:
        path, caption = (item if isinstance(item, (tuple, list)) else (item, None))
        if caption and str(caption).startswith("Image "):
            continue
        files.append((str(path), os.path.basename(str(path))))
    return files


def file_paths(value: Any) -> list[tuple[str, str]]:
    """Paths and names from a ``gr.File`` value (API uploads)."""
    items = value if isinstance(value, list) else ([value] if value else [])
    out = []
    for item in items:
        path = item if isinstance(item, str) else getattr(item, "name", None) or getattr(item, "path", None)
        if path:
            out.append((str(path), os.path.basename(str(path))))
    return out


def url_list(value: Any) -> list[str]:
    """URLs from the API's ``urls`` (a list of strings, or one string); anything else is refused."""
    if value in (None, "", []):
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
        raise UserError("urls must be a list of http(s) URLs (strings).")
    return [u.strip() for u in items if u.strip()]


def page_message(exc: BaseException) -> str:
    """The one way an error becomes a page message: ours as written (escaped), anything else by its type only."""
    if isinstance(exc, UserError):
        return views.plain(str(exc))
    log.error("generation failed: %s", type(exc).__name__)
    return (f"The model failed on this request ({type(exc).__name__}). "
            "Your conversation is kept; try again.")


class ChatHandlers(BranchingHandlers):
    """Every event of the page and the API, as methods over the app's parts (edits, branches and earlier
    chats: ``BranchingHandlers``)."""

    def __init__(self, app: App, gradio_sessions: GradioSessions | None = None):
        self.app = app
        self.service = app.service
        self.saved = app.saved
        self.config = app.config
        self.gradio = gradio_sessions

    def _remember_loop(self) -> None:
        if self.gradio is not None:
            self.gradio.remember_loop()

    # ----- views --------------------------------------------------------------------------
    def views(self, conv: Conversation, partial: str | None = None) -> tuple:
        """Values for the chat, the prompt panel, its stats line and the context meter."""
        with conv.lock:  # one consistent state, while the generation thread may write the answer
            return self._views(conv, partial)

    def _views(self, conv: Conversation, partial: str | None) -> tuple:
        info = conv.last_prompt
        return (views.chat_value(conv, partial), (info.text if info else ""),
                views.prompt_stats(info, str(T("no_prompt"))), self.meter(conv))

    def meter(self, conv: Conversation) -> str:
        """The context meter's text."""
        return views.meter_text(conv, *self.service.context_usage(conv))

    # ----- images -------------------------------------------------------------------------
    def on_upload(self, value, conv: Conversation, progress=gr.Progress()):
        """Files dropped on the gallery: decoded (videos as keyframes, PDFs as pages), stored and labelled,
        or refused with a message; a video or PDF shows its progress."""
        result = self.service.add_images(conv, upload_files(value),
                                         progress=lambda fraction, message: progress(fraction, desc=message))
        for message in result.errors + result.warnings:
            gr.Warning(views.plain(message))
        self.saved.save(conv)
        notice = views.added_notice(result.added, result.errors + result.warnings)
        return views.gallery_value(conv), conv, notice, self.meter(conv)

    def on_delete(self, value, conv: Conversation):
        """Images gone from the gallery leave the conversation (the others keep their labels)."""
        kept = {str(c) for _, c in (value or []) if c}
        gone = [im.number for im in conv.images if im.label not in kept]
        self.service.remove_images(conv, gone)
        self.saved.save(conv)
        text = f"Removed {', '.join(f'Image {n}' for n in gone)}." if gone else ""
        return views.gallery_value(conv), conv, text, self.meter(conv)

    def on_gallery_change(self, value, conv: Conversation):
        """The gallery's own Clear button empties it with no delete event: the images go too.

        Only an empty gallery is acted on: the change event of an upload may arrive after the
        upload's own handler, holding the new files without their labels.
        """
        if value or not conv.images:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self.on_delete(value, conv)

    # ----- asking -------------------------------------------------------------------------
    def on_submit(self, text: str, conv: Conversation):
        """A question joins the conversation (its answer is generated by ``on_generate``)."""
        try:
            self.service.ask(conv, text)
        except UserError as exc:
            gr.Warning(page_message(exc))
            return gr.update(), conv, *self.views(conv)
        self.saved.save(conv)
        return "", conv, *self.views(conv, partial="")

    async def on_generate(self, conv: Conversation, system_prompt: str, temperature: float, top_p: float,
                          max_new_tokens: float):
        """Stream the pending turn's answer into the chat; a failure is a message, the conversation stays."""
        self._remember_loop()
        params = self.service.params(temperature, top_p, max_new_tokens)
        pending = conv.turns[-1].user if conv.turns else ""
        n_turns = len(conv.turns)
        try:
            async for text in iterate_in_thread(
                    lambda: self.saved.saving(self.service.stream_answer(conv, params, system_prompt), conv),
                    on_cancel=lambda: self.service.stop(conv)):
                yield gr.update(), conv, *self.views(conv, partial=text)
        except Exception as exc:  # noqa: BLE001 - the page must survive any engine fault
            gr.Warning(page_message(exc))
            # A failed question taken back from the conversation returns to the box (a cut-off
            # answer keeps its turn, and the box stays as it is).
            yield (pending if len(conv.turns) < n_turns else gr.update()), conv, *self.views(conv)
            return
        yield gr.update(), conv, *self.views(conv)

    def on_stop(self, conv: Conversation) -> None:
        """Stop: the model itself stops within a decode step."""
        self.service.stop(conv)

    def on_regenerate(self, conv: Conversation):
        """Clear the last answer; ``on_generate`` writes a new one."""
        try:
            self.service.regenerate(conv)
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None
        return conv, *self.views(conv, partial="")

    def on_undo(self, conv: Conversation, system_prompt: str):
        """Take back the last exchange; its question returns to the box."""
        try:
            text = self.service.undo(conv)
        except UserError as exc:
            gr.Warning(page_message(exc))
            return gr.update(), conv, *self.views(conv)
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        return text, conv, *self.views(conv)

    def on_new_chat(self, conv: Conversation, request: gr.Request):
        """A fresh conversation in place of this one (the browser's saved entry follows)."""
        fresh = self.app.replace(conv, Conversation(), request.session_hash)
        return fresh, [], "", *self.views(fresh)

    # ----- examples, the model, export/import, feedback ---------------------------------------
    def on_example(self, example: Example, conv: Conversation, request: gr.Request | None):
        """An example's images join the conversation and its question goes in the box."""
        language = language_of(request.headers.get("accept-language") if request else None)
        try:
            labels, text = load_example(self.service, conv, example, language)
        except UserError as exc:
            gr.Warning(page_message(exc))
            return views.gallery_value(conv), conv, gr.update(), gr.update(), *self.views(conv)
        self.saved.save(conv)
        pending = bool(conv.turns) and conv.turns[-1].assistant is None
        return (views.gallery_value(conv), conv, f"Added {', '.join(labels)}.", text,
                *self.views(conv, partial="" if pending else None))

    def example_handler(self, example: Example) -> Callable:
        """``on_example`` for one example (Gradio reads the request from the handler's annotations)."""
        def handler(conv: Conversation, request: gr.Request):
            return self.on_example(example, conv, request)
        return handler

    def on_switch(self, name: str, progress=gr.Progress(track_tqdm=True)):
        """Load another allowed model; the conversations stay as they are."""
        try:
            self.service.switch_model(name, report=lambda fraction, message: progress(fraction, desc=message))
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None
        return (model_line(self.service.model_name), gr.update(visible=self.service.is_random),
                str(T("model_loaded")), gr.update(value=self.service.model_name))

    def on_page_load(self, with_picker: bool = False) -> list:
        """The header follows the model held now (it may have been switched since the page was built)."""
        shown = [model_line(self.service.model_name), gr.update(visible=self.service.is_random)]
        return [*shown, gr.update(value=self.service.model_name)] if with_picker else shown

    def on_export(self, kind: str, conv: Conversation, system_prompt: str) -> str | None:
        """Write an export for download; nothing to export is a message."""
        try:
            return str(self.app.export(kind, conv, system_prompt))
        except UserError as exc:
            gr.Warning(page_message(exc))
            return None

    def export_handler(self, kind: str) -> Callable:
        """``on_export`` for one kind of export."""
        def handler(conv: Conversation, system_prompt: str):
            return self.on_export(kind, conv, system_prompt)
        return handler

    def on_import(self, file, conv: Conversation, system_prompt: str, request: gr.Request):
        """An exported conversation replaces this one, tied to this tab like any other."""
        path = file if isinstance(file, str) else getattr(file, "name", None) or getattr(file, "path", "")
        try:
            fresh, imported_prompt = self.app.import_file(path, conv, request.session_hash)
        except UserError as exc:
            gr.Warning(page_message(exc))
            return conv, gr.update(), gr.update(), gr.update(), *self.views(conv)
        prompt = imported_prompt if imported_prompt is not None else system_prompt
        return fresh, views.gallery_value(fresh), str(T("imported")), prompt, *self.views(fresh)

    def on_like(self, conv: Conversation, system_prompt: str, data: gr.LikeData) -> None:
        """A like or dislike of an answer, written to the feedback log."""
        turn = views.turn_of_message(conv, data.index)
        if turn is not None and self.app.feedback is not None:
            record = conv.to_record(model=self.service.model_name, system_prompt=system_prompt)
            self.app.feedback.record(record, turn, data.liked)

    # ----- the API ------------------------------------------------------------------------
    async def api_chat(self, message: str, images, urls, conv: Conversation, request: gr.Request
                       ) -> AsyncIterator[tuple[str, Conversation]]:
        """Add the given images, videos, PDFs and URLs (may be none) to this client's conversation, ask,
        stream the answer."""
        self._remember_loop()
        try:
            self._api_client(conv, request)
            files, links = file_paths(images), url_list(urls)
            # Decoding videos and PDFs and fetching URLs take a while: never on the event loop.
            result = await anyio.to_thread.run_sync(
                partial(self.service.attach, conv, files, links, all_or_nothing=True))
            if result.errors:
                raise UserError(" ".join(result.errors))
            self.service.ask(conv, message)
            async for text in self.api_stream(conv):
                yield text, conv
        except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dead stream
            raise gr.Error(page_message(exc), print_exception=False) from None

    def api_context(self, conv: Conversation) -> dict:
        """Image labels and count, prompt token count, the rendered prompt, the turns."""
        return conv.summary()

    def api_reset(self, conv: Conversation, request: gr.Request) -> Conversation:
        """Start a new conversation."""
        return self.app.replace(conv, Conversation(), request.session_hash)

    # ----- saved conversations: page load and tab close ----------------------------------------
    def on_load_saved(self, token, conv: Conversation, request: gr.Request):
        """Page load: this browser's saved conversation comes back (a new key for a new browser)."""
        token, restored, pending = self.saved.open(token, request.username)
        if restored is not None:
            conv = restored
        else:
            self.saved.bind(conv, token, request.username)
        self.service.touch(conv, client=request.session_hash)
        return (token, conv, views.gallery_value(conv), pending if pending is not None else gr.update(),
                *self.views(conv))

    async def on_unload(self, request: gr.Request) -> None:
        """The tab closed or reloaded: stop its generation and free its caches now (a reload restores it)."""
        self._remember_loop()
        if not self.service.close_client(request.session_hash) and self.gradio is not None:
            # Already gone (idle past its time-to-live): this very event made Gradio recreate its
            # records, so free them again once it has finished.
            self.gradio.drop_later(request.session_hash, 2.0)
