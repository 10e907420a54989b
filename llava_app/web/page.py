"""The Gradio page and API. The only module that imports gradio."""

from __future__ import annotations

import asyncio
import html
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from llava_app.web.auth import load_users
from llava_app.engine.base import Backend, GenerationParams
from llava_app.engine.switchable import SwitchableBackend
from llava_app.engine.catalog import allowed_models, any_model_allowed, check_allowed, choices
from llava_app.config import Config
from llava_app.chat.context import ContextFitter, hidden_note, meter_text
from llava_app.chat.conversation import Conversation, PromptInfo
from llava_app.web.display import chat_markdown
from llava_app.errors import UserError
from llava_app.chat.examples import Example, available_examples, language_of, load_example
from llava_app.chat.saved import BrowserSaves
from llava_app.chat.transfer import export_conversation, import_conversation
from llava_app.storage.feedback import FeedbackLog
from llava_app.storage.images import ImageLimits, ImageStore
from llava_app.storage.saved import SavedConversations
from llava_app.chat.service import ChatService
from llava_app.web.streaming import iterate_in_thread
from llava_app.web.translations import TRANSLATIONS, key

log = logging.getLogger(__name__)

CSS = """
#random-banner { background: #fff3cd; border: 1px solid #e0b000; border-radius: 8px; padding: 6px 12px; }
#random-banner p { margin: 0; color: #5c4400; }
#prompt-view textarea { font-family: ui-monospace, monospace; font-size: 12px; }
#context-meter p { margin: 0; font-size: 13px; opacity: 0.8; }
footer { display: none !important; }
"""

GENERATION_CONCURRENCY_ID = "model"

# The page's text follows the browser's language (English, Simplified Chinese).
I18N = gr.I18n(**TRANSLATIONS)


def T(name: str):
    """The page text ``name`` (a key of ``translations.EN``), translated in the browser."""
    return I18N(key(name))


def _model_line(name: str) -> str:
    """The header line naming the model (the prefix is translated in the browser)."""
    return f"{T('model_prefix')} `{html.escape(name)}`"


# Images in the page come from this server only: a picture in a question or an answer that
# points elsewhere never loads (a second guard behind ``display.chat_markdown``).
CONTENT_SECURITY_POLICY = "img-src 'self' data: blob:"


class ContentSecurityPolicy:
    """ASGI middleware adding the ``Content-Security-Policy`` header to every response."""

    def __init__(self, app, policy: str = CONTENT_SECURITY_POLICY):
        self.app, self.header = app, (b"content-security-policy", policy.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_policy(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, send_with_policy)


def _plain(text: str) -> str:
    """A message for a toast (which renders HTML): shown as written, never as markup."""
    return html.escape(text, quote=False)


def _gallery_value(conv: Conversation) -> list[tuple[str, str]]:
    """The gallery shows every image of the conversation with its stable label."""
    return [(im.path, im.label) for im in conv.images]


def _chat_value(conv: Conversation, partial: str | None = None) -> list[dict[str, Any]]:
    """The chatbot's messages: each turn's new images, the question, the answer."""
    out: list[dict[str, Any]] = []
    note = hidden_note(conv)
    for i, turn in enumerate(conv.turns):
        if note and i == conv.first_visible:  # a muted, folded note under the turns the model no longer sees
            out.append({"role": "assistant", "content": note["body"],
                        "metadata": {"title": note["title"], "status": "done"}})
        for im in conv.images_for_turn(i):
            out.append({"role": "user", "content": {"path": im.path, "alt_text": im.label}})
        out.append({"role": "user", "content": chat_markdown(turn.user)})
        if turn.assistant is not None:
            answer = chat_markdown(turn.assistant) + ("  \n*(stopped)*" if turn.stopped else "")
            out.append({"role": "assistant", "content": answer})
        elif partial is not None and i == len(conv.turns) - 1:
            out.append({"role": "assistant", "content": chat_markdown(partial)})
    return out


def _prompt_stats(info: PromptInfo | None) -> str:
    if info is None or not info.text:
        return str(T("no_prompt"))
    labels = ", ".join(info.image_labels) or "none"
    return f"**{info.n_images}** image(s) in the prompt ({html.escape(labels)}) · **{info.n_tokens}** prompt tokens"


def _params(temperature: float, top_p: float, max_new_tokens: float, limit: int) -> GenerationParams:
    """Sampling parameters from the panel, clamped to what the operator allows."""
    return GenerationParams(
        temperature=max(0.0, min(2.0, float(temperature or 0.0))),
        top_p=max(0.01, min(1.0, float(top_p or 1.0))),
        max_new_tokens=max(1, min(int(limit), int(max_new_tokens or 1))),
    )


def _upload_files(value: Any) -> list[tuple[str, str]]:
    """Paths and names of newly uploaded gallery items (ours carry an "Image N" caption)."""
    files = []
    for item in value or []:
        path, caption = (item if isinstance(item, (tuple, list)) else (item, None))
        if caption and str(caption).startswith("Image "):
            continue
        files.append((str(path), os.path.basename(str(path))))
    return files


def _file_paths(value: Any) -> list[tuple[str, str]]:
    """Paths and names from a ``gr.File`` value (API uploads)."""
    items = value if isinstance(value, list) else ([value] if value else [])
    out = []
    for item in items:
        path = item if isinstance(item, str) else getattr(item, "name", None) or getattr(item, "path", None)
        if path:
            out.append((str(path), os.path.basename(str(path))))
    return out


def build_demo(backend: Backend, config: Config, store: ImageStore | None = None) -> gr.Blocks:
    """Build (not launch) the Blocks app for ``backend``.

    Args:
        backend: the chat engine (local transformers or a remote server).
        config: the app configuration.
        store: where uploads are kept; defaults to ``<data_dir>/images``.

    Example:
        >>> demo = build_demo(backend, config)  # doctest: +SKIP
        >>> demo.queue(max_size=config.queue_size).launch(**launch_kwargs(config))  # doctest: +SKIP
    """
    store = store or ImageStore(os.path.join(config.data_dir, "images"))
    # Stored images are content-addressed and never change: served as static files, gradio does
    # not re-hash every picture of the chat (megabytes each) on every streamed update.
    gr.set_static_paths([str(store.root)])
    service = ChatService(
        backend, store, max_images=config.max_images, max_question_chars=config.max_question_chars,
        image_limits=ImageLimits(max_bytes=config.max_upload_bytes),
        context=ContextFitter(backend, summarize=config.summarize_dropped, answer_tokens=config.max_new_tokens),
        max_images_per_message=config.max_images_per_message, session_ttl=config.session_ttl,
    )
    service.start_housekeeping()
    history = BrowserSaves(open_saved_conversations(config), store)
    service.on_release.append(history.release)
    service.housekeeping.append(history.housekeep)

    def on_session_end(conv: Conversation) -> None:
        # Gradio calls this when the state expires (idle past --session-ttl, or an hour after the tab closed).
        if isinstance(conv, Conversation):
            service.forget(conv)

    with gr.Blocks(title="llava-app · chat with your photos", fill_width=True) as demo:
        demo.service = service  # for tests and the API layers
        demo.history = history
        state = gr.State(lambda: Conversation(), delete_callback=on_session_end,  # a fresh one (and id) per session
                         time_to_live=config.session_ttl)
        # The browser's key to its saved conversation (localStorage: shared by its tabs, unknown to other browsers).
        browser_key = gr.BrowserState("", storage_key="llava-app-conversation",
                                      secret=history.saved.secret() if history.enabled else None)
        gr.Markdown(T("title"), elem_id="title")
        model_line = gr.Markdown(_model_line(backend.model_name), elem_id="model-name")
        banner = gr.Markdown(T("random_banner"), elem_id="random-banner", visible=backend.is_random)
        picker = _model_picker(backend, config)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=280):
                # file_types=["file"]: every upload reaches on_upload, which says clearly what it cannot
                # read; Gradio's own image filter answers a non-image with a bare "An error occurred"
                # once the gallery holds an image.
                gallery = gr.Gallery(
                    label=T("gallery"), elem_id="gallery",
                    interactive=True, file_types=["file"], type="filepath", columns=3, height=360,
                    object_fit="contain", show_label=True, format="png",
                )
                notice = gr.Markdown("", elem_id="notice")
                example_buttons = _example_buttons()
            with gr.Column(scale=3, min_width=360):
                chatbot = gr.Chatbot(label=T("chatbot"), elem_id="chatbot", height=460, sanitize_html=True,
                                     render_markdown=True, buttons=["copy"])
                question = gr.Textbox(
                    placeholder=T("question"),
                    show_label=False, elem_id="question", lines=1, max_lines=6, autofocus=True,
                )
                with gr.Row():
                    send_btn = gr.Button(T("send"), variant="primary", elem_id="send")
                    stop_btn = gr.Button(T("stop"), variant="stop", elem_id="stop", interactive=False)
                    regen_btn = gr.Button(T("regenerate"), elem_id="regenerate")
                    undo_btn = gr.Button(T("undo"), elem_id="undo")
                    new_btn = gr.Button(T("new_chat"), elem_id="new-chat")
                meter = gr.Markdown(meter_text(Conversation(), service.context), elem_id="context-meter")
        with gr.Accordion(T("parameters"), open=False, elem_id="parameters"):
            system_prompt = gr.Textbox(value=config.system_prompt, label=T("system_prompt"), lines=2,
                                       elem_id="system-prompt")
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=config.temperature, step=0.05,
                                        label=T("temperature"), elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=config.top_p, step=0.05, label=T("top_p"), elem_id="top-p")
                max_new = gr.Slider(1, config.max_new_tokens_limit, value=config.max_new_tokens, step=1,
                                    label=T("max_new_tokens"), elem_id="max-new-tokens")
        with gr.Accordion(T("model_sees"), open=False, elem_id="model-sees"):
            prompt_stats = gr.Markdown(T("no_prompt"), elem_id="prompt-stats")
            prompt_view = gr.Textbox(label=T("prompt"),
                                     lines=10, max_lines=30, interactive=False, elem_id="prompt-view",
                                     buttons=["copy"])
        with gr.Accordion(T("export_section"), open=False, elem_id="export-import"):
            with gr.Row():
                export_buttons = {kind: gr.Button(T(f"export_{kind}"), size="sm", elem_id=f"export-{kind}")
                                  for kind in EXPORT_KINDS}
                import_button = gr.UploadButton(str(T("import")), file_types=[".json", ".zip"],
                                                file_count="single", size="sm", elem_id="import")
            export_file = gr.File(label=T("download"), interactive=False, elem_id="export-file")

        # API-only components (hidden): /chat takes a message and files, returns the answer.
        with gr.Column(visible=False):
            api_message = gr.Textbox(label="message")
            api_images = gr.File(label="images", file_count="multiple", type="filepath")
            api_answer = gr.Textbox(label="answer")
            api_context = gr.JSON(label="context")
            api_chat_btn, api_context_btn, api_reset_btn = gr.Button(), gr.Button(), gr.Button()

        gen_inputs = [state, system_prompt, temperature, top_p, max_new]
        view_outputs = [chatbot, prompt_view, prompt_stats, meter]

        def views(conv: Conversation, partial: str | None = None):
            info = conv.last_prompt
            return (_chat_value(conv, partial), (info.text if info else ""), _prompt_stats(info),
                    meter_text(conv, service.context))

        # ----- images ------------------------------------------------------------------------
        def on_upload(value, conv: Conversation):
            result = service.add_images(conv, _upload_files(value))
            for message in result.errors + result.warnings:
                gr.Warning(_plain(message))
            text = f"Added {', '.join(result.added)}." if result.added else ""
            if result.errors or result.warnings:
                text = (text + " " if text else "") + " ".join(html.escape(e) for e in result.errors + result.warnings)
            history.save(conv)
            return _gallery_value(conv), conv, text, meter_text(conv, service.context)

        def on_delete(value, conv: Conversation):
            kept = {str(c) for _, c in (value or []) if c}
            gone = [im.number for im in conv.images if im.label not in kept]
            service.remove_images(conv, gone)
            text = f"Removed {', '.join(f'Image {n}' for n in gone)}." if gone else ""
            history.save(conv)
            return _gallery_value(conv), conv, text, meter_text(conv, service.context)

        gallery.upload(on_upload, [gallery, state], [gallery, state, notice, meter], api_visibility="private",
                       show_progress="minimal")
        gallery.delete(on_delete, [gallery, state], [gallery, state, notice, meter], api_visibility="private")

        def on_gallery_change(value, conv: Conversation):
            # The gallery's own Clear button (x at its top) empties it with no delete event:
            # then the conversation's images go too. Only an empty gallery is acted on: the
            # change event of an upload may arrive after the upload's own handler, holding
            # the new files without their labels, and must not remove anything.
            if value or not conv.images:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return on_delete(value, conv)

        gallery.change(on_gallery_change, [gallery, state], [gallery, state, notice, meter], api_visibility="private",
                       show_progress="hidden")

        # ----- asking ------------------------------------------------------------------------
        def on_submit(text: str, conv: Conversation):
            try:
                service.ask(conv, text)
            except UserError as exc:
                gr.Warning(_plain(str(exc)))
                return gr.update(), conv, *views(conv)
            history.save(conv)
            return "", conv, *views(conv, partial="")

        async def on_generate(conv: Conversation, sys_prompt: str, temp: float, tp: float, mnt: float):
            gradio_sessions.loop = asyncio.get_running_loop()
            params = _params(temp, tp, mnt, config.max_new_tokens_limit)
            pending = conv.turns[-1].user if conv.turns else ""
            n_turns = len(conv.turns)
            try:
                async for text in iterate_in_thread(
                        lambda: history.saving(service.stream_answer(conv, params, sys_prompt), conv),
                        on_cancel=lambda: service.stop(conv)):
                    yield gr.update(), conv, *views(conv, partial=text)
            except Exception as exc:  # noqa: BLE001 - the page must survive any engine fault
                if isinstance(exc, UserError):
                    gr.Warning(_plain(str(exc)))
                else:
                    log.error("generation failed: %s", type(exc).__name__)
                    gr.Warning(f"The model failed on this request ({type(exc).__name__}). "
                               "Your conversation is kept; try again.")
                # A failed question taken back from the conversation returns to the box (a cut-off
                # answer keeps its turn, and the box stays as it is).
                yield (pending if len(conv.turns) < n_turns else gr.update()), conv, *views(conv)
                return
            yield gr.update(), conv, *views(conv)

        submit_kwargs = dict(api_visibility="private", show_progress="hidden")
        gen_kwargs = dict(api_visibility="private", concurrency_limit=backend.max_concurrency,
                          concurrency_id=GENERATION_CONCURRENCY_ID,
                          show_progress="minimal", show_progress_on=[chatbot])
        # While an answer is being written only Stop (and typing the next question) is offered;
        # the other controls come back when it ends, however it ends.
        busy_controls = [send_btn, regen_btn, undo_btn, new_btn]

        def controls(busy: bool):
            return *[gr.update(interactive=not busy)] * len(busy_controls), gr.update(interactive=busy)

        lock_kwargs = dict(api_visibility="private", queue=False, show_progress="hidden")
        for trigger in (question.submit, send_btn.click):
            trigger(on_submit, [question, state], [question, state, *view_outputs], **submit_kwargs).success(
                lambda: controls(True), None, [*busy_controls, stop_btn], **lock_kwargs).success(
                on_generate, gen_inputs, [question, state, *view_outputs], **gen_kwargs).then(
                lambda: controls(False), None, [*busy_controls, stop_btn], **lock_kwargs)

        def on_stop(conv: Conversation):
            service.stop(conv)

        stop_btn.click(on_stop, [state], None, api_visibility="private", queue=False)

        def on_regenerate(conv: Conversation):
            try:
                service.regenerate(conv)
            except UserError as exc:
                raise gr.Error(_plain(str(exc)), print_exception=False) from None
            return conv, *views(conv, partial="")

        regen_btn.click(on_regenerate, [state], [state, *view_outputs], **submit_kwargs).success(
            lambda: controls(True), None, [*busy_controls, stop_btn], **lock_kwargs).success(
            on_generate, gen_inputs, [question, state, *view_outputs], **gen_kwargs).then(
            lambda: controls(False), None, [*busy_controls, stop_btn], **lock_kwargs)

        def on_undo(conv: Conversation, sys_prompt: str):
            try:
                text = service.undo(conv)
            except UserError as exc:
                gr.Warning(_plain(str(exc)))
                return gr.update(), conv, *views(conv)
            conv.last_prompt = service.preview(conv, sys_prompt) if conv.turns else None
            history.save(conv)
            return text, conv, *views(conv)

        undo_btn.click(on_undo, [state, system_prompt], [question, state, *view_outputs], **submit_kwargs)

        def on_new_chat(conv: Conversation, request: gr.Request):
            fresh = Conversation()
            history.rebind(conv, fresh)
            service.forget(conv)
            service.sessions.touch(fresh, client=request.session_hash)
            history.save(fresh)
            return fresh, [], "", *views(fresh)

        new_btn.click(on_new_chat, [state], [state, gallery, notice, *view_outputs], **submit_kwargs)
        # The chatbot's own Clear (bin) button empties the chat view; the conversation goes too,
        # or the model would still answer from turns the page no longer shows.
        chatbot.clear(on_new_chat, [state], [state, gallery, notice, *view_outputs], **submit_kwargs)

        # ----- examples, model switching, export/import, feedback (features of their own modules) ------
        def on_example(example: Example, conv: Conversation, request: gr.Request):
            language = language_of(request.headers.get("accept-language") if request else None)
            try:
                labels, text = load_example(service, conv, example, language)
            except UserError as exc:
                gr.Warning(_plain(str(exc)))
                return _gallery_value(conv), conv, gr.update(), gr.update(), *views(conv)
            history.save(conv)
            pending = conv.turns and conv.turns[-1].assistant is None
            return (_gallery_value(conv), conv, f"Added {', '.join(labels)}.", text,
                    *views(conv, partial="" if pending else None))

        def example_handler(example: Example):
            def handler(conv: Conversation, request: gr.Request):
                return on_example(example, conv, request)
            return handler

        for example, button in example_buttons:
            event = button.click(example_handler(example), [state],
                                 [gallery, state, notice, question, *view_outputs], **submit_kwargs)
            if example.prelude:
                event.success(on_generate, gen_inputs, [question, state, *view_outputs], **gen_kwargs)

        def on_switch(name: str, progress=gr.Progress(track_tqdm=True)):
            """Load another allowed model; the conversations stay as they are."""
            try:
                name = check_allowed(name, picker.allowed)
                backend.switch(name, report=lambda fraction, message: progress(fraction, desc=message))
            except UserError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            return (_model_line(backend.model_name), gr.update(visible=backend.is_random), str(T("model_loaded")),
                    gr.update(value=backend.model_name))

        if picker is not None:
            picker.button.click(on_switch, [picker.dropdown], [model_line, banner, picker.status, picker.dropdown],
                                api_name="switch_model", concurrency_limit=1,
                                concurrency_id=GENERATION_CONCURRENCY_ID, show_progress="full",
                                show_progress_on=[picker.dropdown])

        def on_page_load():
            # The model may have been switched since the page was built.
            shown = [_model_line(backend.model_name), gr.update(visible=backend.is_random)]
            return [*shown, gr.update(value=backend.model_name)] if picker is not None else shown

        demo.load(on_page_load, None, [model_line, banner, *([picker.dropdown] if picker else [])],
                  api_visibility="private", queue=False)

        exports_dir = Path(config.data_dir) / "exports"

        def on_export(kind: str, conv: Conversation, sys_prompt: str):
            if not conv.turns and not conv.images:
                gr.Warning("There is nothing to export yet: add images or ask a question first.")
                return None
            return str(_export(kind, conv, exports_dir, model=backend.model_name, system_prompt=sys_prompt))

        def export_handler(kind: str):
            def handler(conv: Conversation, sys_prompt: str):
                return on_export(kind, conv, sys_prompt)
            return handler

        for kind, button in export_buttons.items():
            button.click(export_handler(kind), [state, system_prompt], [export_file], api_visibility="private")

        def on_import(file, conv: Conversation, sys_prompt: str):
            path = file if isinstance(file, str) else getattr(file, "name", None) or getattr(file, "path", "")
            if service.is_running(conv):
                gr.Warning("Press Stop, or wait for the answer, before importing a conversation.")
                return conv, gr.update(), gr.update(), gr.update(), *views(conv)
            try:
                imported = import_conversation(path, store, limits=service.upload_limits(),
                                               max_images=config.max_images)
            except UserError as exc:
                gr.Warning(_plain(str(exc)))
                return conv, gr.update(), gr.update(), gr.update(), *views(conv)
            fresh = imported.conversation
            history.rebind(conv, fresh)
            service.forget(conv)
            service.sessions.touch(fresh)
            history.save(fresh)
            prompt = imported.system_prompt if imported.system_prompt is not None else sys_prompt
            return fresh, _gallery_value(fresh), str(T("imported")), prompt, *views(fresh)

        import_button.upload(on_import, [import_button, state, system_prompt],
                             [state, gallery, notice, system_prompt, *view_outputs], **submit_kwargs)

        if config.feedback_file:
            feedback = FeedbackLog(config.feedback_file, with_images=config.feedback_images)

            def on_like(conv: Conversation, sys_prompt: str, data: gr.LikeData):
                turn = _turn_of_message(conv, data.index)
                if turn is None:
                    return
                feedback.record(conv.to_record(model=backend.model_name, system_prompt=sys_prompt), turn, data.liked)

            chatbot.like(on_like, [state, system_prompt], None, api_visibility="private", queue=False)

        # ----- the API ------------------------------------------------------------------------
        async def api_chat(message: str, images, conv: Conversation, request: gr.Request):
            """Add the given images (may be none) to this client's conversation, ask, stream the answer."""
            gradio_sessions.loop = asyncio.get_running_loop()
            try:
                service.sessions.touch(conv, client=request.session_hash)
                result = service.add_images(conv, _file_paths(images), all_or_nothing=True)
                if result.errors:
                    raise UserError(" ".join(result.errors))
                service.ask(conv, message)
                params = GenerationParams(config.temperature, config.top_p, config.max_new_tokens)
                text = ""
                async for text in iterate_in_thread(
                        lambda: service.stream_answer(conv, params, config.system_prompt),
                        on_cancel=lambda: service.stop(conv)):
                    yield text, conv
                yield text, conv
            except UserError as exc:
                raise gr.Error(_plain(str(exc)), print_exception=False) from None
            except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dead stream
                log.error("API generation failed: %s", type(exc).__name__)
                raise gr.Error(f"The model failed on this request ({type(exc).__name__}). Your conversation is "
                               "kept; try again.", print_exception=False) from None

        def api_context_fn(conv: Conversation) -> dict:
            """Image labels and count, prompt token count, the rendered prompt, the turns."""
            return conv.summary()

        def api_reset(conv: Conversation, request: gr.Request):
            """Start a new conversation."""
            service.forget(conv)
            fresh = Conversation()
            service.sessions.touch(fresh, client=request.session_hash)
            return fresh

        api_chat_btn.click(api_chat, [api_message, api_images, state], [api_answer, state], api_name="chat",
                           concurrency_limit=backend.max_concurrency, concurrency_id=GENERATION_CONCURRENCY_ID)
        api_context_btn.click(api_context_fn, [state], [api_context], api_name="context")
        api_reset_btn.click(api_reset, [state], [state], api_name="reset")

        # ----- saved conversations: page load and tab close ------------------------------------
        def on_load_history(token, conv: Conversation, request: gr.Request):
            token, restored, pending = history.open(token, request.username)
            if restored is not None:
                conv = restored
            else:
                history.bind(conv, token, request.username)
            service.sessions.touch(conv, client=request.session_hash)
            return (token, conv, _gallery_value(conv), pending if pending is not None else gr.update(),
                    *views(conv))

        demo.load(on_load_history, [browser_key, state], [browser_key, state, gallery, question, *view_outputs],
                  api_visibility="private", queue=False, show_progress="hidden")

        async def on_unload(request: gr.Request):
            # The tab closed or reloaded: stop its generation and free its caches now. Its conversation
            # was saved for the browser; a reload restores it.
            gradio_sessions.loop = asyncio.get_running_loop()
            if not service.sessions.close_client(request.session_hash):
                # Already gone (idle past its time-to-live): this very event made Gradio recreate its
                # records, so free them again once it has finished.
                gradio_sessions.loop.call_later(2.0, gradio_sessions._drop_now, request.session_hash)

        demo.unload(on_unload)
    gradio_sessions = _GradioSessions(demo)
    service.sessions.on_client_gone = gradio_sessions.drop
    return demo


def open_saved_conversations(config: Config) -> SavedConversations | None:
    """The saved conversations the config asks for (None with --no-history)."""
    if not config.history:
        return None
    root = os.path.join(config.data_dir, "history")
    return SavedConversations(config.history_db or os.path.join(root, "conversations.sqlite3"),
                              config.history_dir or os.path.join(root, "images"),
                              retention_s=config.history_days * 86400,
                              max_bytes=int(config.history_max_mb * 1024 * 1024))


class _GradioSessions:
    """Frees what Gradio keeps per session once our housekeeping knows the client is gone.

    Gradio keeps every session's state and a copy of the page config (about 100 KB here) until
    10,000 sessions have passed, and a closed tab's state for an hour: memory that grows
    with the sessions that have come and gone. Gradio has no public call for this, so the
    state holder is used directly, on the event loop (where Gradio itself touches it).
    """

    def __init__(self, demo: gr.Blocks):
        self.demo = demo
        self.loop: asyncio.AbstractEventLoop | None = None

    def drop(self, session_hash: str) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._drop_now, session_hash)

    def _drop_now(self, session_hash: str) -> None:
        holder = getattr(self.demo, "state_holder", None)
        if holder is None or session_hash not in holder.session_data:
            return
        queue = getattr(self.demo, "_queue", None)
        if queue is not None and queue.pending_event_ids_session.get(session_hash):
            asyncio.get_running_loop().call_later(5.0, self._drop_now, session_hash)  # events still in flight
            return
        holder.delete_state(session_hash)
        with holder.lock:
            holder.session_data.pop(session_hash, None)
            holder.time_last_used.pop(session_hash, None)
        if queue is not None:  # the session's (empty) message queue and event list
            queue.pending_event_ids_session.pop(session_hash, None)
            messages = queue.pending_messages_per_session.get(session_hash)
            if messages is not None and messages.empty():
                queue.pending_messages_per_session.pop(session_hash, None)



EXPORT_KINDS = ("markdown", "json", "zip")
_EXPORTS_KEPT = 64  # export folders kept on disk; older ones are removed


def _export(kind: str, conv: Conversation, exports_dir: Path, *, model: str, system_prompt: str) -> Path:
    """Write one export into a fresh folder (a readable file name for the download)."""
    exports_dir.mkdir(parents=True, exist_ok=True)
    old = sorted(exports_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    for folder in old[:max(0, len(old) - _EXPORTS_KEPT + 1)]:
        shutil.rmtree(folder, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=exports_dir))
    return export_conversation(kind, conv, folder, model=model, system_prompt=system_prompt)


def _turn_of_message(conv: Conversation, index: Any) -> int | None:
    """The turn whose answer is message ``index`` of the chatbot (images are messages too)."""
    position = index[0] if isinstance(index, (list, tuple)) else index
    n = 0
    for i, turn in enumerate(conv.turns):
        if i == conv.first_visible and hidden_note(conv):
            n += 1  # the note on turns the model no longer sees
        n += len(conv.images_for_turn(i)) + 1  # the turn's images, then its question
        if turn.assistant is not None:
            if n == position:
                return i
            n += 1
    return None


@dataclass
class _Picker:
    """The model picker's components and the allow-list it offers."""

    dropdown: gr.Dropdown
    button: gr.Button
    status: gr.Markdown
    allowed: list[str]


def _model_picker(backend: Backend, config: Config) -> _Picker | None:
    """A dropdown of the allowed models and a Load button; None when the backend cannot switch."""
    if not isinstance(backend, SwitchableBackend):
        return None
    allowed = allowed_models(config)
    with gr.Accordion(T("model_section"), open=False, elem_id="model-section"):
        with gr.Row(equal_height=True):
            dropdown = gr.Dropdown(choices=choices(allowed), value=backend.model_name, label=T("model_picker"),
                                   allow_custom_value=any_model_allowed(allowed), elem_id="model-picker", scale=4)
            button = gr.Button(T("load_model"), elem_id="load-model", scale=1)
        status = gr.Markdown("", elem_id="model-status")
    return _Picker(dropdown, button, status, allowed)


def _example_buttons() -> list[tuple[Example, gr.Button]]:
    """One button per example, with its first image as the icon."""
    examples = available_examples()
    if not examples:
        return []
    gr.Markdown(T("examples"), elem_id="examples-title")
    with gr.Row(elem_id="examples"):
        return [(ex, gr.Button(T(ex.key), icon=str(ex.paths()[0]), size="sm", elem_id=ex.key.replace("_", "-"),
                               min_width=120)) for ex in examples]


def launch_kwargs(config: Config, demo: gr.Blocks | None = None) -> dict[str, Any]:
    """Arguments for ``demo.launch`` that the app and the tests share (``demo``: for ``--openai-api``)."""
    kwargs = dict(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        max_file_size=config.max_upload_bytes,
        allowed_paths=[os.path.join(config.data_dir, "images"), os.path.join(config.data_dir, "exports")],
        i18n=I18N,
        css=CSS,
        theme=gr.themes.Soft(),
        show_error=False,
        app_kwargs={"middleware": [Middleware(ContentSecurityPolicy)]},
        auth=load_users(config.auth, config.auth_file),
        auth_message="Sign in to use this demo.",
    )
    if config.openai_api:
        if demo is None:
            raise ValueError("--openai-api needs the demo: launch_kwargs(config, demo)")
        from llava_app.web.openai_api import build_router

        # Routes given to the FastAPI app that launch() creates: served from its first request on.
        kwargs["app_kwargs"]["routes"] = build_router(demo.service, config).routes
    return kwargs


def queue_kwargs(config: Config) -> dict[str, Any]:
    """Arguments for ``demo.queue``."""
    return dict(max_size=config.queue_size, default_concurrency_limit=4)
