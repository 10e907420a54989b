"""The conversation's events on the page: pictures in and out, asking, answers, Undo, New chat,
examples, export/import, feedback, page load and tab close.

``build_demo`` wires these methods to the page's components; tests call them directly,
without launching a server. Each handler does one thing through the app's parts (the
service, the saved conversations, the feedback log) and turns the project's errors into
page messages here (``context.page_message``), escaped, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from llava_app.chat.clearing import ClearedImages, clear_images, undo_clear
from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import Example, load_example
from llava_app.chat.regions import read_regions
from llava_app.chat.service import Waiting
from llava_app.chat.uploads import media_options
from llava_app.errors import UserError
from llava_app.messages import Joined, Message
from llava_app.web.cancellable import iterate_in_thread
from llava_app.web.handlers import views
from llava_app.web.handlers.context import HandlerContext, language, page_message
from llava_app.web.handlers.inputs import links_in, message_files, message_text, pasted_urls, upload_files
from llava_app.web.handlers.outputs import Attached, Captured, Cleared, Strip, skipped
from llava_app.web.i18n import T, model_line
from llava_app.web.translations import localize

log = logging.getLogger(__name__)
ELSEWHERE = Message("notice.elsewhere")


#: Regenerate samples at least this hot: at temperature 0 (greedy) it would repeat the answer word for word
REGENERATE_TEMPERATURE = 0.7


def regenerate_temperature(temperature: float | None) -> float:
    """The temperature of Regenerate's answer: the person's, or ``REGENERATE_TEMPERATURE`` when that is greedy."""
    return float(temperature) if float(temperature or 0) > 0 else REGENERATE_TEMPERATURE


class ChatHandlers:
    """The conversation's events, as methods over the app's parts (edits, branches and earlier chats:
    ``branches.BranchHandlers``; the API: ``api.ApiHandlers``)."""

    def __init__(self, context: HandlerContext):
        app = self.app = context.app
        self.service = app.service
        self.saved = app.saved
        self.config = app.config
        self.gradio = context.gradio
        # the shared helpers, under the names these handlers call them by
        self._remember_loop, self.views, self.warn = context.remember_loop, context.views, context.warn
        self._images, self._asked, self.limits_text = context.images, context.asked, context.limits_text
        self.gallery, self._meter = context.gallery, context.meter
        #: the files last taken from each conversation's question box (forgotten when it ends)
        self._attached: dict[str, frozenset[str]] = {}
        #: what each conversation's last Clear all took, for its Undo (forgotten when it ends)
        self._cleared: dict[str, ClearedImages] = {}
        app.service.on_release.append(self._forget)

    def _forget(self, conv_id: str) -> None:
        self._attached.pop(conv_id, None)
        self._cleared.pop(conv_id, None)

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
            return skipped(Attached)
        self._attached[conv.id] = batch
        lang = language(request)
        notice = self._attach(conv, files, progress, lang, frames, pages)
        return Attached({"text": message_text(value), "files": []}, *self._images(conv, notice, lang))

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
            return skipped(Strip)
        self.saved.save(conv)
        text = Message("notice.removed", labels=", ".join(f"Image {n}" for n in gone))
        lang = language(request)
        return self._images(conv, localize(text, lang), lang)

    def on_gallery_change(self, value, conv: Conversation, request: gr.Request | None = None):
        """Whatever set the strip (an upload, a reload, a chat opened, an import): the count beside it follows.

        Emptied with no delete event, its pictures go too. Only the count is written here: the change
        event of an upload may arrive before the upload's own handler, holding files without their labels.
        """
        if not value and conv.images:
            return self.on_delete(value, conv, request)
        lang = language(request)
        return skipped(Strip)._replace(limits=self.limits_text(conv, lang), meter=self._meter(conv, lang))

    def on_camera(self, value, conv: Conversation, frames: float | None = None, pages: str | None = None,
                  request: gr.Request | None = None) -> Captured:
        """A photo taken with the camera joins the strip as the next labelled picture; the camera closes."""
        if not value:  # the camera emptied (by this handler, or its own clear)
            return skipped(Captured)
        lang = language(request)
        notice = self._attach(conv, [(str(value), "camera.png")], lang=lang, frames=frames, pages=pages)
        return Captured(*self._images(conv, notice, lang), None, gr.update(visible=False))

    def on_clear_ask(self, conv: Conversation, request: gr.Request | None = None) -> tuple:
        """Clear all asks first (the notice, the question, its buttons): nothing is removed yet."""
        lang, count = language(request), len(conv.images)
        if not count:
            return localize(Message("notice.nothing_to_clear"), lang), gr.update(visible=False), gr.skip()
        return gr.skip(), gr.update(visible=True), localize(Message("notice.clear_ask", count=count), lang)

    def on_clear(self, conv: Conversation, system_prompt: str, request: gr.Request | None = None) -> Cleared:
        """Clear all, confirmed: every picture leaves the conversation, and Undo is offered."""
        lang = language(request)
        with conv.lock:
            labels = [im.label for im in conv.images]
            cleared = clear_images(conv)
        if labels:
            self._cleared[conv.id] = cleared
        notice = localize(Message("notice.cleared", labels=", ".join(labels)), lang) if labels else ""
        return self._cleared_view(conv, system_prompt, notice, bool(labels), lang)

    def on_undo_clear(self, conv: Conversation, system_prompt: str, request: gr.Request | None = None) -> Cleared:
        """Undo of Clear all: its pictures come back with their labels."""
        lang = language(request)
        cleared = self._cleared.pop(conv.id, None)
        back = undo_clear(conv, cleared, self.service.max_images) if cleared is not None else []
        notice = Message("notice.restored", labels=", ".join(back)) if back else Message("notice.not_restored")
        return self._cleared_view(conv, system_prompt, localize(notice, lang), False, lang)

    def _cleared_view(self, conv: Conversation, system_prompt: str, notice: str, undo: bool, lang: str) -> Cleared:
        """After Clear all or its Undo: saved, and "What the model sees" follows at once."""
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        strip = self._images(conv, notice, lang)
        return Cleared(strip.gallery, conv, notice, strip.limits, *self.views(conv, lang=lang),
                       gr.update(visible=False), gr.update(visible=undo))

    # ----- asking -------------------------------------------------------------------------
    def on_submit(self, value, conv: Conversation, request: gr.Request | None = None, regions: Any = None):
        """A question (and any files still in the box) joins the conversation; ``on_generate`` answers it.

        Links in it (with ``--image-urls``) are fetched into the strip first (the notice says what came and
        what failed), and the question names a fetched one by its label; a box holding only links is not a
        question (the question comes next). Where links are not fetched, the question is asked and the notice
        says the model reads only the address. ``regions`` (JSON) are those marked in the large view (page.js).
        """
        lang, files, notice = language(request), message_files(value), ""
        question = message_text(value)
        urls = links_in(question)
        if urls and self.config.image_urls:
            result = self.service.add_urls(conv, urls)
            problems = result.errors + result.warnings
            for message in problems:
                self.warn(views.plain(message, lang), lang)
            self.saved.save(conv)
            notice = views.added_notice(result.added, problems, lang)
            if pasted_urls(question):
                box = "" if result.added and not result.errors else gr.update()
                # Not a question: nothing is asked, so the answer step that follows finds nothing to write.
                return self._asked(box, conv, notice, lang)
            if len(urls) == 1 and result.added:  # "what is in https://…?" -> "what is in Image 3?"
                question = question.replace(urls[0], ", ".join(result.added))
        elif urls:
            log.info("a question holds a link this server does not fetch (start it with --image-urls to fetch them)")
            notice = localize(Message("notice.links_not_fetched"), lang)
            if pasted_urls(question):  # only links: nothing to ask the model about
                self.warn(views.plain(notice, lang), lang)
                return self._asked(gr.update(), conv, notice, lang)
        if files:
            notice = Joined([self._attach(conv, files, lang=lang), notice]).render(lang)
        try:
            self.service.ask(conv, question, read_regions(regions))
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            keep = {"text": message_text(value), "files": []} if files else gr.update()
            notice = notice or page_message(exc, lang)
            return self._asked(keep, conv, notice, lang)
        self.saved.save(conv)
        return self._asked("", conv, notice, lang, partial="")

    async def on_generate(self, conv: Conversation, system_prompt: str, temperature: float, top_p: float,
                          max_new_tokens: float, request: gr.Request | None = None):
        """Stream the pending turn's answer into the chat; a failure is a message, the conversation stays.

        While the answer waits for the engine the chat says where it stands ("2nd in line"). The first value of
        each update is the question given back (a failed or stopped question taken out of the conversation, at
        the end; None otherwise): the page puts it in the box once the answer is over.
        """
        self._remember_loop()
        lang = language(request)
        params = self.service.params(temperature, top_p, max_new_tokens)
        pending = conv.turns[-1].user if conv.turns else ""
        n_turns = len(conv.turns)
        try:
            async for item in iterate_in_thread(
                    lambda: self.saved.saving(self.service.stream_answer(conv, params, system_prompt,
                                                                         report_waiting=True), conv),
                    on_cancel=lambda: self.service.stop(conv)):
                if isinstance(item, Waiting):
                    yield None, conv, *self.views(conv, waiting=item.place, lang=lang)
                else:
                    yield None, conv, *self.views(conv, partial=item, lang=lang)
        except Exception as exc:  # noqa: BLE001 - the page must survive any engine fault
            self.warn(page_message(exc, lang), lang)
            # A failed question taken back from the conversation returns to the box (a cut-off
            # answer keeps its turn, and the box stays as it is).
            yield (pending if len(conv.turns) < n_turns else None), conv, *self.views(conv, lang=lang)
            return
        # Stopped while it waited: the question is back in the box, as after a failure.
        yield (pending if len(conv.turns) < n_turns else None), conv, *self.views(conv, lang=lang)

    async def on_generate_again(self, conv: Conversation, system_prompt: str, temperature: float, top_p: float,
                                max_new_tokens: float, request: gr.Request | None = None):
        """Regenerate's own answer (the page chains it to ``on_regenerate`` alone): ``on_generate``, sampled at
        ``REGENERATE_TEMPERATURE`` when the person's temperature is greedy.

        The temperature travels with this event and nowhere else: a Regenerate whose answer never ran (the
        click failed, the tab went away) leaves nothing behind for the next ordinary question.
        """
        answer = self.on_generate(conv, system_prompt, regenerate_temperature(temperature), top_p, max_new_tokens,
                                  request)
        try:
            async for update in answer:
                yield update
        finally:  # closed here (cancelled, it has ended already): the answer is closed with it
            await answer.aclose()

    def on_stop(self, conv: Conversation) -> None:
        """Stop: the model itself stops within a decode step."""
        self.service.stop(conv)

    def on_regenerate(self, conv: Conversation, temperature: float, request: gr.Request | None = None):
        """Clear the last answer; ``on_generate_again`` writes a new one, sampled when the setting is greedy."""
        lang = language(request)
        try:
            self.service.regenerate(conv)
        except UserError as exc:
            raise gr.Error(page_message(exc, lang), print_exception=False) from None
        notice = ""
        if not float(temperature or 0) > 0:
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
        """A fresh conversation in place of this one, with an empty question box (the browser's saved entry
        follows)."""
        fresh = self.app.replace(conv, Conversation(), request.session_hash)
        return fresh, [], "", "", *self.views(fresh, lang=language(request))  # the box empty too

    # ----- examples, the model, export/import, feedback ---------------------------------------
    def on_example(self, example: Example, conv: Conversation, request: gr.Request | None):
        """An example's images join the conversation and its question goes in the box."""
        lang = language(request)
        try:
            labels, text = load_example(self.service, conv, example, lang)
        except UserError as exc:
            self.warn(page_message(exc, lang), lang)
            return self.gallery(conv), conv, gr.update(), gr.update(), *self.views(conv, lang=lang)
        self.saved.save(conv)
        pending = bool(conv.turns) and conv.turns[-1].assistant is None
        added = Message("notice.added", labels=", ".join(labels))
        return (self.gallery(conv), conv, localize(added, lang), text,
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
        except UserError as exc:  # the notice says so too (a stale "Imported." would say the opposite)
            self.warn(page_message(exc, lang), lang)
            return conv, gr.update(), page_message(exc, lang), gr.update(), *self.views(conv, lang=lang)
        prompt = imported_prompt if imported_prompt is not None else system_prompt
        return fresh, self.gallery(fresh), str(T("imported")), prompt, *self.views(fresh, lang=lang)

    def on_like(self, conv: Conversation, system_prompt: str, data: gr.LikeData) -> None:
        """A like or dislike of an answer, written to the feedback log."""
        turn = views.turn_of_message(conv, data.index)
        if turn is not None and self.app.feedback is not None:
            record = conv.to_record(model=self.service.model_name, system_prompt=system_prompt)
            self.app.feedback.record(record, turn, data.liked)

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
            self.saved.bind_reader(conv, token, request.username, tab)  # not saved; the earlier chats at hand
        else:
            token, restored, pending = self.saved.open(token, request.username, tab)
            if restored is not None:
                conv = restored
            else:
                self.saved.bind(conv, token, request.username, tab)
        self.service.touch(conv, client=request.session_hash)
        return (token, conv, self.gallery(conv), pending if pending is not None else gr.update(),
                *self.views(conv, lang=lang), self.limits_text(conv, lang), notice)

    async def on_unload(self, request: gr.Request) -> None:
        """The tab closed or reloaded: stop its generation and free its caches now (a reload restores it)."""
        self._remember_loop()
        if not self.service.close_client(request.session_hash) and self.gradio is not None:
            # Already gone (idle past its time-to-live): this very event made Gradio recreate its
            # records, so free them again once it has finished.
            self.gradio.drop_later(request.session_hash, 2.0)
