"""The page's and the API's event handlers: one class, one method per event.

``build_demo`` wires these methods to the page's components; tests call them directly,
without launching a server. Each handler does one thing through the app's parts (the
service, the saved conversations, the feedback log) and turns the project's errors into
page messages here, escaped, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

import anyio
import gradio as gr

from llava_app.application import App
from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import Example, language_of, load_example
from llava_app.chat.service import Waiting
from llava_app.chat.uploads import media_options
from llava_app.errors import UserError
from llava_app.messages import Joined, Message
from llava_app.web import views
from llava_app.web.branching import BranchingHandlers
from llava_app.web.gradio_compat import GradioSessions
from llava_app.web.i18n import T, model_line
from llava_app.web.inputs import file_paths, message_files, message_text, pasted_urls, upload_files, url_list
from llava_app.web.streaming import iterate_in_thread
from llava_app.web.translations import localize

log = logging.getLogger(__name__)

ELSEWHERE = Message("notice.elsewhere")


def language(request: gr.Request | None) -> str:
    """The browser's language (``zh-CN`` or ``en``), from the request's accept-language."""
    return language_of(request.headers.get("accept-language") if request is not None else None)


#: Regenerate samples at least this hot: at temperature 0 (greedy) it would repeat the answer word for word
REGENERATE_TEMPERATURE = 0.7


def page_message(exc: BaseException, lang: str = "en") -> str:
    """The one way an error becomes a page message, in ``lang`` (the API's: English): ours as written (escaped),
    anything else by its type only."""
    if isinstance(exc, UserError):
        return views.plain(exc.message, lang)
    log.error("generation failed: %s", type(exc).__name__)
    return views.plain(Message("notice.model_failed", kind=type(exc).__name__), lang)


class ChatHandlers(BranchingHandlers):
    """Every event of the page and the API, as methods over the app's parts (edits, branches and earlier
    chats: ``BranchingHandlers``)."""

    def __init__(self, app: App, gradio_sessions: GradioSessions | None = None):
        self.app = app
        self.service = app.service
        self.saved = app.saved
        self.config = app.config
        self.gradio = gradio_sessions
        #: conversations whose next answer is a Regenerate at temperature 0: it samples instead
        self._resample: set[str] = set()
        #: the files last taken from each conversation's question box (forgotten when it ends)
        self._attached: dict[str, frozenset[str]] = {}
        app.service.on_release.append(self._forget)

    def _forget(self, conv_id: str) -> None:
        self._attached.pop(conv_id, None)
        self._resample.discard(conv_id)

    def _remember_loop(self) -> None:
        if self.gradio is not None:
            self.gradio.remember_loop()

    # ----- views --------------------------------------------------------------------------
    def views(self, conv: Conversation, partial: str | None = None, waiting: int | None = None,
              lang: str = "en") -> tuple:
        """Values for the chat, the prompt panel, its stats line and the context meter (in ``lang``)."""
        with conv.lock:  # one consistent state, while the generation thread may write the answer
            return self._views(conv, partial, waiting, lang)

    def _views(self, conv: Conversation, partial: str | None, waiting: int | None, lang: str) -> tuple:
        info = conv.last_prompt
        return (views.chat_value(conv, partial, waiting, lang), (info.text if info else ""),
                views.prompt_stats(info, str(T("no_prompt")), lang), self.meter(conv, lang))

    def meter(self, conv: Conversation, lang: str = "en") -> str:
        """The context meter's text."""
        return views.meter_text(conv, *self.service.context_usage(conv), lang=lang)

    @staticmethod
    def warn(message: Message | str, lang: str) -> None:
        """A toast with the server's ``message`` in the browser's language (a ``Message`` is rendered and escaped
        here; a string comes escaped already)."""
        gr.Warning(views.plain(message, lang) if isinstance(message, Message) else message)

    def limits_text(self, conv: Conversation, lang: str = "en") -> str:
        """The limits next to the strip, shown before anyone reaches them."""
        per = self.service.max_images_per_message
        count = (Message("strip.count_per_question", count=len(conv.images), limit=self.service.max_images, per=per)
                 if per and per < self.service.max_images else
                 Message("strip.count", count=len(conv.images), limit=self.service.max_images))
        return localize(count, lang)

    def _images(self, conv: Conversation, notice: str, lang: str = "en") -> tuple:
        """Values for the strip, the conversation, the notice, the limits and the meter."""
        return views.gallery_value(conv), conv, notice, self.limits_text(conv, lang), self.meter(conv, lang)

    def _attach(self, conv: Conversation, files: list[tuple[str, str]], progress=None, lang: str = "en",
                frames: float | None = None, pages: str | None = None) -> str:
        """Every way a picture arrives ends here: decoded, labelled, saved; the notice tells what happened.

        ``frames`` and ``pages`` are the person's choices for videos (keyframes) and PDFs (pages).
        """
        report = None if progress is None else (lambda fraction, message: progress(fraction,
                                                                                   desc=localize(message, lang)))
        options = None if frames is None else media_options(frames, pages, self.frames_limit)
        result = self.service.add_images(conv, files, progress=report, options=options)
        problems = views.merged(result.errors) + result.warnings  # a batch over a limit: one message
        for message in problems:
            self.warn(views.plain(message, lang), lang)
        self.saved.save(conv)
        return views.added_notice(result.added, problems, lang)

    # ----- images -------------------------------------------------------------------------
    @property
    def frames_limit(self) -> int:
        """The most keyframes one video may give: what goes with one question."""
        return self.service.max_images_per_message or self.service.max_images

    def on_upload(self, value, conv: Conversation, frames: float | None = None, pages: str | None = None,
                  request: gr.Request | None = None, progress=gr.Progress()):
        """Files dropped on the strip (or taken with the webcam, or pasted there): decoded (videos as keyframes,
        PDFs as pages), stored and labelled, or refused with a message; a video or PDF shows its progress."""
        lang = language(request)
        return self._images(conv, self._attach(conv, upload_files(value), progress, lang, frames, pages), lang)

    def on_attach(self, value, conv: Conversation, frames: float | None = None, pages: str | None = None,
                  request: gr.Request | None = None, progress=gr.Progress()):
        """Files attached in, pasted into or dropped on the question box join the strip at once; the text stays."""
        files = message_files(value)
        batch = frozenset(path for path, _ in files)
        if not files or self._attached.get(conv.id) == batch:  # the box reports one upload more than once
            return (gr.skip(),) * 6
        self._attached[conv.id] = batch
        lang = language(request)
        notice = self._attach(conv, files, progress, lang, frames, pages)
        return {"text": message_text(value), "files": []}, *self._images(conv, notice, lang)

    def on_delete(self, value, conv: Conversation, request: gr.Request | None = None):
        """Images gone from the strip leave the conversation (the others keep their labels).

        Removing the strip's last picture sends two events, its delete and its change (now empty),
        handled at the same time and in either order: the first removes and says so, the other
        finds nothing gone and leaves the page as it is (were it to answer, its empty notice could
        land last and wipe "Removed Image 1.").
        """
        kept = {views.label_of(str(c)) for _, c in (value or []) if c}
        with conv.lock:  # the other event may be removing the same pictures right now
            gone = [im.number for im in conv.images if im.label not in kept]
            self.service.remove_images(conv, gone)
        if not gone:
            return (gr.skip(),) * 5
        self.saved.save(conv)
        text = Message("notice.removed", labels=", ".join(f"Image {n}" for n in gone))
        lang = language(request)
        return self._images(conv, localize(text, lang), lang)

    def on_gallery_change(self, value, conv: Conversation, request: gr.Request | None = None):
        """The strip's own Clear button empties it with no delete event: the images go too.

        Only an empty gallery is acted on: the change event of an upload may arrive after the
        upload's own handler, holding the new files without their labels.
        """
        if value or not conv.images:
            return (gr.skip(),) * 5
        return self.on_delete(value, conv, request)

    # ----- asking -------------------------------------------------------------------------
    def on_submit(self, value, conv: Conversation, request: gr.Request | None = None):
        """A question (and any files still in the box) joins the conversation; ``on_generate`` answers it.

        A box holding only links (with ``--image-urls``) fetches them into the strip instead: the
        question comes next.
        """
        lang, files, notice = language(request), message_files(value), ""
        urls = pasted_urls(message_text(value)) if self.config.image_urls else []
        if urls:
            result = self.service.add_urls(conv, urls)
            for message in result.errors + result.warnings:
                self.warn(views.plain(message, lang), lang)
            self.saved.save(conv)
            notice = views.added_notice(result.added, result.errors + result.warnings, lang)
            box = "" if result.added and not result.errors else gr.update()
            # Not a question: nothing is asked, so the answer step that follows finds nothing to write.
            return box, *self._images(conv, notice, lang)[:4], *self.views(conv, lang=lang)
        if files:
            notice = self._attach(conv, files, lang=lang)
        try:
            self.service.ask(conv, message_text(value))
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            keep = {"text": message_text(value), "files": []} if files else gr.update()
            notice = notice or page_message(exc, lang)
            return keep, *self._images(conv, notice, lang)[:4], *self.views(conv, lang=lang)
        self.saved.save(conv)
        return "", *self._images(conv, notice, lang)[:4], *self.views(conv, partial="", lang=lang)

    async def on_generate(self, conv: Conversation, system_prompt: str, temperature: float, top_p: float,
                          max_new_tokens: float, request: gr.Request | None = None):
        """Stream the pending turn's answer into the chat; a failure is a message, the conversation stays.

        While the answer waits for the engine the chat says where it stands ("2nd in line").
        """
        self._remember_loop()
        lang = language(request)
        if conv.id in self._resample:  # Regenerate at temperature 0 would write the same answer again
            self._resample.discard(conv.id)
            temperature = max(float(temperature or 0), REGENERATE_TEMPERATURE)
        params = self.service.params(temperature, top_p, max_new_tokens)
        pending = conv.turns[-1].user if conv.turns else ""
        n_turns = len(conv.turns)
        try:
            async for item in iterate_in_thread(
                    lambda: self.saved.saving(self.service.stream_answer(conv, params, system_prompt,
                                                                         report_waiting=True), conv),
                    on_cancel=lambda: self.service.stop(conv)):
                if isinstance(item, Waiting):
                    yield gr.update(), conv, *self.views(conv, waiting=item.place, lang=lang)
                else:
                    yield gr.update(), conv, *self.views(conv, partial=item, lang=lang)
        except Exception as exc:  # noqa: BLE001 - the page must survive any engine fault
            self.warn(page_message(exc, lang), lang)
            # A failed question taken back from the conversation returns to the box (a cut-off
            # answer keeps its turn, and the box stays as it is).
            yield (pending if len(conv.turns) < n_turns else gr.update()), conv, *self.views(conv, lang=lang)
            return
        # Stopped while it waited: the question is back in the box, as after a failure.
        yield (pending if len(conv.turns) < n_turns else gr.update()), conv, *self.views(conv, lang=lang)

    def on_stop(self, conv: Conversation) -> None:
        """Stop: the model itself stops within a decode step."""
        self.service.stop(conv)

    def on_regenerate(self, conv: Conversation, temperature: float, request: gr.Request | None = None):
        """Clear the last answer; ``on_generate`` writes a new one, sampled when the setting is greedy."""
        lang = language(request)
        try:
            self.service.regenerate(conv)
        except UserError as exc:
            raise gr.Error(page_message(exc, lang), print_exception=False) from None
        notice = ""
        if not float(temperature or 0) > 0:
            self._resample.add(conv.id)
            notice = Message("notice.regenerating", temperature=REGENERATE_TEMPERATURE)
        return conv, localize(notice, lang), *self.views(conv, partial="", lang=lang)

    def on_undo(self, conv: Conversation, system_prompt: str, request: gr.Request | None = None):
        """Take back the last exchange; its question returns to the box."""
        lang = language(request)
        try:
            text = self.service.undo(conv)
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            return gr.update(), conv, *self.views(conv, lang=lang)
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        return text, conv, *self.views(conv, lang=lang)

    def on_new_chat(self, conv: Conversation, request: gr.Request):
        """A fresh conversation in place of this one (the browser's saved entry follows)."""
        fresh = self.app.replace(conv, Conversation(), request.session_hash)
        return fresh, [], "", *self.views(fresh, lang=language(request))

    # ----- examples, the model, export/import, feedback ---------------------------------------
    def on_example(self, example: Example, conv: Conversation, request: gr.Request | None):
        """An example's images join the conversation and its question goes in the box."""
        lang = language(request)
        try:
            labels, text = load_example(self.service, conv, example, lang)
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            return views.gallery_value(conv), conv, gr.update(), gr.update(), *self.views(conv, lang=lang)
        self.saved.save(conv)
        pending = bool(conv.turns) and conv.turns[-1].assistant is None
        added = Message("notice.added", labels=", ".join(labels))
        return (views.gallery_value(conv), conv, localize(added, lang), text,
                *self.views(conv, partial="" if pending else None, lang=lang))

    def example_handler(self, example: Example) -> Callable:
        """``on_example`` for one example (Gradio reads the request from the handler's annotations)."""
        def handler(conv: Conversation, request: gr.Request):
            return self.on_example(example, conv, request)
        return handler

    def on_page_load(self, with_picker: bool = False) -> list:
        """The header follows the model held now (it may have been switched since the page was built)."""
        shown = [model_line(self.service.model_name), gr.update(visible=self.service.is_random)]
        return [*shown, gr.update(value=self.service.model_name)] if with_picker else shown

    def on_export(self, kind: str, conv: Conversation, system_prompt: str, lang: str = "en") -> str | None:
        """Write an export for download; nothing to export is a message."""
        try:
            return str(self.app.export(kind, conv, system_prompt))
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            return None

    def export_handler(self, kind: str) -> Callable:
        """``on_export`` for one kind of export."""
        def handler(conv: Conversation, system_prompt: str, request: gr.Request):
            return self.on_export(kind, conv, system_prompt, language(request))
        return handler

    def on_import(self, file, conv: Conversation, system_prompt: str, request: gr.Request):
        """An exported conversation replaces this one, tied to this tab like any other."""
        lang = language(request)
        path = file if isinstance(file, str) else getattr(file, "name", None) or getattr(file, "path", "")
        try:
            fresh, imported_prompt = self.app.import_file(path, conv, request.session_hash)
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            return conv, gr.update(), gr.update(), gr.update(), *self.views(conv, lang=lang)
        prompt = imported_prompt if imported_prompt is not None else system_prompt
        return fresh, views.gallery_value(fresh), str(T("imported")), prompt, *self.views(fresh, lang=lang)

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
                raise UserError(Joined(result.errors))
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
    def on_load_saved(self, token, conv: Conversation, request: gr.Request, tab: str = ""):
        """Page load: this browser's saved conversation comes back (a new key for a new browser).

        ``tab`` names this browser tab (it survives the tab's reloads): when another tab of the
        browser has the saved conversation open, this one starts a new conversation that is not
        saved over it, and the notice says so (the two would otherwise overwrite each other's turns).
        """
        lang, notice, pending = language(request), gr.update(), None
        if self.saved.held_elsewhere(token, request.username, tab):
            notice = localize(ELSEWHERE, lang)
        else:
            token, restored, pending = self.saved.open(token, request.username, tab)
            if restored is not None:
                conv = restored
            else:
                self.saved.bind(conv, token, request.username, tab)
        self.service.touch(conv, client=request.session_hash)
        return (token, conv, views.gallery_value(conv), pending if pending is not None else gr.update(),
                *self.views(conv, lang=lang), self.limits_text(conv, lang), notice)

    async def on_unload(self, request: gr.Request) -> None:
        """The tab closed or reloaded: stop its generation and free its caches now (a reload restores it)."""
        self._remember_loop()
        if not self.service.close_client(request.session_hash) and self.gradio is not None:
            # Already gone (idle past its time-to-live): this very event made Gradio recreate its
            # records, so free them again once it has finished.
            self.gradio.drop_later(request.session_hash, 2.0)
