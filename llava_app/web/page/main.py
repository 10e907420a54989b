"""The Gradio page: its layout, and which handler each event calls (the handlers are in ``web.handlers``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from llava_app.application import EXPORT_KINDS, App
from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import Example, available_examples
from llava_app.web.gradio_compat import GradioSessions, app_made_at_launch, hidden_progress_to, without_load_event
from llava_app.web.handlers import Handlers
from llava_app.web.handlers.outputs import Attached, Captured, Cleared, Sent, Strip
from llava_app.web.handlers.session import SessionHandlers
from llava_app.web.handlers.switch_policy import SwitchPolicy
from llava_app.web.i18n import T, model_line
from llava_app.web.page import branches
from llava_app.web.page.api import wire_api
from llava_app.web.page.components import Page, Picker, StripControls


def build_demo(app: App) -> gr.Blocks:
    """Build (not launch) the page and API for ``app``; ``server.launch`` serves it.

    Example:
        >>> app = create_app(config)  # doctest: +SKIP
        >>> launch(app, build_demo(app))  # doctest: +SKIP
    """
    # The pictures the page is given (links under each conversation's unguessable folder) never change:
    # served as static files, gradio does not re-hash every picture of the chat (megabytes each) on
    # every streamed update.
    gr.set_static_paths([str(app.shown.root)])
    with app_made_at_launch(), gr.Blocks(title="llava-app · chat with your photos", fill_width=True) as demo:
        handlers = Handlers(app, GradioSessions(demo))
        page = _layout(app, handlers)
        _wire_images(page, handlers)
        _wire_asking(page, handlers)
        _wire_features(page, handlers)
        wire_api(page, handlers, app)
        branches.wire(page, handlers)
        _wire_session(page, handlers, demo)
        _wire_preferences(page, handlers.session, demo, app)
        hidden_progress_to(demo, page.state)  # the conversation's State: never drawn, no value in the page
    app.service.on_client_gone(handlers.context.gradio.drop)
    return demo


def _layout(app: App, handlers: Handlers) -> Page:
    """Lay out the components (no events): the conversation in the middle, settings beside it."""
    config, service = app.config, app.service

    def on_session_end(conv: Conversation) -> None:
        # Gradio calls this when the state expires (idle past --session-ttl, or an hour after the tab closed).
        if isinstance(conv, Conversation):
            service.forget(conv)

    # Each session's first conversation comes from the factory when first used; the page's load event
    # (``on_load_saved``) is the one that sets it on load (Gradio's own load event for it would race that).
    state = without_load_event(gr.State(lambda: Conversation(), delete_callback=on_session_end,
                                        time_to_live=config.session_ttl))
    # The browser's key to its saved conversation (localStorage: shared by its tabs, unknown to other browsers).
    browser_key = gr.BrowserState("", storage_key="llava-app-conversation", secret=app.saved.secret())
    with gr.Row(elem_id="app", equal_height=False):
        # Earlier chats: a column on a laptop (collapsible), a drawer on a phone; New chat at its top.
        with gr.Column(elem_id="chats-side", scale=0, min_width=230):
            new_chat = gr.Button(T("new_chat"), variant="primary", elem_id="new-chat", size="sm")
            share = branches.share_button(app.share_links is not None and app.share_links.enabled)
            chats = branches.chats_panel(share)
            branches.chats_list(handlers, chats)
        with gr.Column(elem_id="main", scale=3, min_width=320):
            with gr.Row(elem_id="header", equal_height=True):
                chats_toggle = gr.Button(T("chats_toggle"), elem_id="chats-toggle", size="sm", scale=0, min_width=44)
                gr.Markdown(T("title"), elem_id="title")
                header = gr.Markdown(model_line(service.model_name), elem_id="model-name")
                settings = gr.Button(T("settings"), elem_id="settings-toggle", size="sm", scale=0, min_width=90)
            banner = gr.Markdown(T("random_banner"), elem_id="random-banner", visible=service.is_random)
            chatbot = gr.Chatbot(show_label=False, elem_id="chatbot", height="auto", sanitize_html=True,
                                 render_markdown=True, buttons=["copy"], layout="bubble", autoscroll=True,
                                 placeholder=str(T("chat_placeholder")))
            # Under the chat, held at the window's foot from the first paint: nothing jumps when the chat mounts.
            with gr.Column(elem_id="dock"):
                examples = _example_buttons()  # only while the chat is empty (style.css)
                strip = _image_strip(handlers)
                edit = branches.edit_bar()
                with gr.Row(elem_id="composer", equal_height=True):
                    # Any file is taken in (the handler says clearly what it cannot read), and pasted
                    # screenshots arrive here too; they all join the strip above with the next label.
                    question = gr.MultimodalTextbox(placeholder=T("question"), show_label=False, elem_id="question",
                                                    file_count="multiple", sources=["upload"], submit_btn=False,
                                                    lines=1, max_lines=6, autofocus=False, scale=1)
                    camera_open = gr.Button(T("camera"), elem_id="camera-open", scale=0, min_width=80)
                    send = gr.Button(T("send"), variant="primary", elem_id="send", scale=0, min_width=64)
                    stop = gr.Button(T("stop"), variant="stop", elem_id="stop", interactive=False, scale=0,
                                     min_width=64)
                with gr.Row(elem_id="actions"):  # a quiet row under the box, as chat apps have
                    regenerate = gr.Button(T("regenerate"), elem_id="regenerate", size="sm", scale=0, min_width=90)
                    undo = gr.Button(T("undo"), elem_id="undo", size="sm", scale=0, min_width=70)
        with gr.Column(elem_id="side", scale=1, min_width=280):
            meter = gr.Markdown(handlers.context.meter(Conversation()), elem_id="context-meter")
            panels = _panels(config)
            frames, pages = _media_choices(config, handlers.chat.frames_limit)
            picker = _model_picker(app)
    return Page(state=state, returned=gr.State(None), browser_key=browser_key, model_line=header, banner=banner,
                picker=picker, gallery=strip.gallery, notice=strip.notice, strip=strip, chats_toggle=chats_toggle,
                camera_open=camera_open, examples=examples, chatbot=chatbot, question=question, send=send,
                stop=stop, regenerate=regenerate, undo=undo, new_chat=new_chat, meter=meter, **panels,
                limits=strip.limits, settings_toggle=settings, frames=frames, pages=pages, edit=edit, chats=chats)


def _image_strip(handlers: Handlers) -> StripControls:
    """The conversation's images as a compact strip of labelled thumbnails, the limits and Clear all beside it,
    the camera (opened from here or from the question box), and the notice under it (with Undo after Clear all)."""
    with gr.Row(elem_id="strip", equal_height=True):
        # file_types=["file"]: every upload reaches on_upload, which says clearly what it cannot
        # read; Gradio's own image filter answers a non-image with a bare "An error occurred".
        # No webcam here: Gradio's gallery hides the other pictures in camera mode (the camera below does not).
        gallery = gr.Gallery(label=T("gallery"), show_label=False, elem_id="gallery", interactive=True,
                             file_types=["file"], sources=["upload", "clipboard"], type="filepath",
                             columns=8, fit_columns=False, height=96, object_fit="cover", format="png",
                             allow_preview=False, scale=1)  # page.js opens a thumbnail large, with its label
        with gr.Column(elem_id="strip-side", scale=0, min_width=120):
            limits = gr.Markdown(handlers.context.limits_text(Conversation()), elem_id="limits")
            with gr.Row(elem_id="strip-tools"):
                camera_strip = gr.Button(T("camera"), elem_id="camera-strip", size="sm", scale=0, min_width=44)
                clear = gr.Button(T("clear_all"), elem_id="clear-strip", size="sm", scale=0, min_width=44)
    with gr.Row(elem_id="clear-confirm", visible=False) as confirm:
        confirm_text = gr.Markdown("", elem_id="clear-question")
        clear_yes = gr.Button(T("clear_yes"), variant="stop", size="sm", elem_id="clear-yes", scale=0, min_width=90)
        clear_no = gr.Button(T("clear_no"), size="sm", elem_id="clear-no", scale=0, min_width=70)
    with gr.Row(elem_id="camera-box", visible=False) as camera_box:
        camera = gr.Image(sources=["webcam"], type="filepath", show_label=False, elem_id="camera", height=240,
                          format="png", scale=1)
        camera_close = gr.Button(T("camera_close"), size="sm", elem_id="camera-close", scale=0, min_width=70)
    with gr.Row(elem_id="notice-row"):
        notice = gr.Markdown("", elem_id="notice")
        undo_clear = gr.Button(T("undo_clear"), size="sm", elem_id="undo-clear", visible=False, scale=0, min_width=70)
    return StripControls(gallery=gallery, limits=limits, notice=notice, clear=clear, confirm=confirm,
                         confirm_text=confirm_text, clear_yes=clear_yes, clear_no=clear_no, undo_clear=undo_clear,
                         camera=camera, camera_box=camera_box, camera_strip=camera_strip, camera_close=camera_close)


def _panels(config) -> dict[str, Any]:
    """The side panel's accordions: what the model sees, parameters, export/import (``Page``'s fields, by name)."""
    with gr.Accordion(T("parameters"), open=False, elem_id="parameters"):
        system_prompt = gr.Textbox(value=config.system_prompt, label=T("system_prompt"), lines=2,
                                   elem_id="system-prompt")
        temperature = gr.Slider(0.0, 2.0, value=config.temperature, step=0.05, label=T("temperature"),
                                elem_id="temperature")
        top_p = gr.Slider(0.05, 1.0, value=config.top_p, step=0.05, label=T("top_p"), elem_id="top-p")
        max_new = gr.Slider(1, config.max_new_tokens_limit, value=config.max_new_tokens, step=1,
                            label=T("max_new_tokens"), elem_id="max-new-tokens")
    with gr.Accordion(T("model_sees"), open=False, elem_id="model-sees"):
        prompt_stats = gr.Markdown(T("no_prompt"), elem_id="prompt-stats")
        prompt_view = gr.Textbox(label=T("prompt"), lines=8, max_lines=24, interactive=False,
                                 elem_id="prompt-view", buttons=["copy"])
    with gr.Accordion(T("export_section"), open=False, elem_id="export-import"):
        with gr.Row():
            export_buttons = {kind: gr.Button(T(f"export_{kind}"), size="sm", elem_id=f"export-{kind}")
                              for kind in EXPORT_KINDS}
            import_button = gr.UploadButton(str(T("import")), file_types=[".json", ".zip"], file_count="single",
                                            size="sm", elem_id="import")
        export_file = gr.File(label=T("download"), interactive=False, elem_id="export-file")
    return dict(system_prompt=system_prompt, temperature=temperature, top_p=top_p, max_new=max_new,
                prompt_stats=prompt_stats, prompt_view=prompt_view, export_buttons=export_buttons,
                import_button=import_button, export_file=export_file)


def _media_choices(config, frames_limit: int) -> tuple[gr.Slider, gr.Textbox]:
    """How many keyframes a video gives and which pages of a PDF are read (for the next ones added)."""
    with gr.Accordion(T("media_section"), open=False, elem_id="media-choices"):
        frames = gr.Slider(1, max(2, frames_limit), value=min(config.video_frames, frames_limit), step=1,
                           label=T("video_frames"), elem_id="video-frames")
        pages = gr.Textbox(label=T("pdf_pages"), placeholder="1-3, 5", max_lines=1, elem_id="pdf-pages")
    return frames, pages


def _model_picker(app: App) -> Picker | None:
    """A dropdown of the allowed models and a Load button; None when the server cannot switch or nobody may.

    Offered to admins only (``--model-switching admins``), it is built hidden and shown on page load.
    """
    offered = app.service.model_choices()
    policy = SwitchPolicy.from_config(app.config)
    if offered is None or not policy.offered:
        return None
    names, any_allowed = offered
    with gr.Accordion(T("model_section"), open=False, elem_id="model-section",
                      visible=policy.for_everyone) as section:
        with gr.Row(equal_height=True):
            dropdown = gr.Dropdown(choices=names, value=app.service.model_name, label=T("model_picker"),
                                   allow_custom_value=any_allowed, elem_id="model-picker", scale=4)
            button = gr.Button(T("load_model"), elem_id="load-model", scale=1)
        status = gr.Markdown("", elem_id="model-status")
    return Picker(dropdown, button, status, section)


def _example_buttons() -> list[tuple[Example, gr.Button]]:
    """One button per example, with its first image as the icon."""
    examples = available_examples()
    if not examples:
        return []
    gr.Markdown(T("examples"), elem_id="examples-title")
    with gr.Row(elem_id="examples"):
        return [(ex, gr.Button(T(ex.key), icon=str(ex.paths()[0]), size="sm", elem_id=ex.key.replace("_", "-"),
                               min_width=120)) for ex in examples]


# ----- events ----------------------------------------------------------------------------------
SUBMIT = dict(api_visibility="private", show_progress="hidden")
LOCK = dict(api_visibility="private", queue=False, show_progress="hidden")
# The view follows a new question and its answer even if the person had scrolled up before
# sending (page.js keeps following, unless they scroll up during it).
_TO_FOOT = "const el = document.querySelector('#chatbot .bubble-wrap'); window.llavaFollowing = true; " \
           "if (el) el.scrollTop = el.scrollHeight;"
FOLLOW = "(...args) => { " + _TO_FOOT + " return args; }"
# Send: as FOLLOW, and the regions marked in the large view (page.js keeps them, shown as chips over the question
# box) go with the question as its last input; the chips go with them.
SEND = "(...args) => { " + _TO_FOOT + " const marked = JSON.stringify(window.llavaRegions || []); " \
       "if (window.llavaTakeRegions) window.llavaTakeRegions(); args[args.length - 1] = marked; return args; }"


CHATS_TOGGLE = "() => { const b = document.body; b.classList.remove('show-side'); " \
               "b.classList.toggle(matchMedia('(max-width: 760px)').matches ? 'show-chats' : 'hide-chats'); }"


def _generation() -> dict[str, Any]:
    """Event settings of a generation: no queue limit here, the service's line orders the answers and tells
    each where it stands; a minimal progress mark on the chat."""
    return dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")


def _controls(page: Page, busy: bool) -> list:
    return [*[gr.update(interactive=not busy)] * len(page.busy_controls), gr.update(interactive=busy)]


def _then_generate(event, page: Page, handlers: Handlers, generate: Callable | None = None) -> None:
    """After ``event`` succeeds: lock the controls, stream the answer (``generate``: ``on_generate`` unless the
    event asks for its own), unlock them however it ended (and show the list of earlier chats again: a new title
    or date)."""
    locked = [*page.busy_controls, page.stop]
    # The question box is not an output of the stream: Gradio rebuilds an output's component (and its config) for
    # each "no change" it is sent, once a token. A question the answer gave back returns to it at the end.
    done = event.success(lambda: _controls(page, True), None, locked, **LOCK).success(
        generate or handlers.chat.on_generate, page.settings, [page.returned, page.state, *page.views],
        **_generation()
    ).then(lambda returned: (*_controls(page, False), gr.skip() if returned is None else returned), page.returned,
           [*locked, page.question], **LOCK)
    branches.refresh_list(done, page, handlers)


def _wire_images(page: Page, handlers: Handlers) -> None:
    outputs = page.outputs(Strip)
    media = [page.frames, page.pages]  # the person's choices for videos and PDFs
    # Progress on the strip, where the person looks (not on the notice, limits and meter it also fills).
    page.gallery.upload(handlers.chat.on_upload, [page.gallery, page.state, *media], outputs, api_visibility="private",
                        show_progress="minimal", show_progress_on=[page.gallery])
    page.gallery.delete(handlers.chat.on_delete, [page.gallery, page.state], outputs, api_visibility="private",
                        show_progress_on=[page.gallery])
    page.gallery.change(handlers.chat.on_gallery_change, [page.gallery, page.state], outputs, api_visibility="private",
                        show_progress="hidden")
    strip, quick = page.strip, dict(api_visibility="private", queue=False, show_progress="hidden")
    # The camera, opened from the strip or the question box: a photo taken joins as the next labelled picture.
    for opener in (strip.camera_strip, page.camera_open):
        opener.click(lambda: gr.update(visible=True), None, [strip.camera_box], **quick)
    strip.camera_close.click(lambda: (None, gr.update(visible=False)), None, [strip.camera, strip.camera_box],
                             **quick)
    strip.camera.change(handlers.chat.on_camera, [strip.camera, page.state, *media], page.outputs(Captured),
                        api_visibility="private", show_progress="hidden")
    # Clear all asks first, and Undo puts the pictures back.
    strip.clear.click(handlers.chat.on_clear_ask, [page.state], [page.notice, strip.confirm, strip.confirm_text],
                      **quick)
    strip.clear_no.click(lambda: gr.update(visible=False), None, [strip.confirm], **quick)
    strip.clear_yes.click(handlers.chat.on_clear, [page.state, page.system_prompt], page.outputs(Cleared),
                          api_visibility="private", show_progress="hidden")
    strip.undo_clear.click(handlers.chat.on_undo_clear, [page.state, page.system_prompt], page.outputs(Cleared),
                           api_visibility="private", show_progress="hidden")
    page.question.change(handlers.branches.on_attach_box, [page.question, page.edit.editing, page.state, *media],
                         page.outputs(Attached),
                         api_visibility="private", show_progress="hidden", trigger_mode="always_last")


def _wire_asking(page: Page, handlers: Handlers) -> None:
    edit, asked = page.edit, page.outputs(Sent)
    marked = gr.Textbox(visible=False)  # the regions marked (JSON), filled by SEND as the question leaves
    for trigger in (page.question.submit, page.send.click):  # a new question, or the one being edited
        event = trigger(handlers.branches.on_send, [page.question, edit.editing, edit.keep, page.state, marked],
                        asked, js=SEND, **SUBMIT)
        _then_generate(event, page, handlers)
    page.stop.click(handlers.chat.on_stop, [page.state], None, api_visibility="private", queue=False)
    event = page.regenerate.click(handlers.chat.on_regenerate, [page.state, page.temperature],
                                  [page.state, page.notice, *page.views], js=FOLLOW, **SUBMIT)
    branches.close_edit(event, page)
    _then_generate(event, page, handlers, handlers.chat.on_generate_again)  # sampled when the setting is greedy
    event = page.undo.click(handlers.chat.on_undo, [page.state, page.system_prompt], [page.question, page.state,
                                                                                 *page.views], **SUBMIT)
    branches.close_edit(event, page)  # the box now holds the question taken back, not the one edited
    branches.refresh_list(event, page, handlers)
    fresh = [page.state, page.gallery, page.notice, page.question, *page.views]
    # New chat, and the chatbot's own Clear (bin) button, which empties the chat view: the conversation goes
    # too, or the model would still answer from turns the page no longer shows. The old one stays in the list.
    for trigger in (page.new_chat.click, page.chatbot.clear):
        event = trigger(handlers.chat.on_new_chat, [page.state], fresh, **SUBMIT)
        branches.close_edit(event, page)
        branches.refresh_list(event, page, handlers)
    for example, button in page.examples:
        event = button.click(handlers.chat.example_handler(example), [page.state],
                             [page.gallery, page.state, page.notice, page.question, *page.views], **SUBMIT)
        if example.prelude:  # it asks its first question itself: answered like one sent, controls locked
            _then_generate(event, page, handlers)
    # On a phone the side panel (settings, what the model sees) opens over the chat and closes again.
    page.settings_toggle.click(None, js="() => { document.body.classList.remove('show-chats'); "
                                        "document.body.classList.toggle('show-side'); }")
    # The earlier chats: folded away on a laptop, a drawer on a phone.
    page.chats_toggle.click(None, js=CHATS_TOGGLE)


def _wire_features(page: Page, handlers: Handlers) -> None:
    for kind, button in page.export_buttons.items():
        button.click(handlers.chat.export_handler(kind), [page.state, page.system_prompt], [page.export_file],
                     api_visibility="private")
    event = page.import_button.upload(handlers.chat.on_import, [page.import_button, page.state, page.system_prompt],
                                      [page.state, page.gallery, page.notice, page.system_prompt, *page.views],
                                      **SUBMIT)
    branches.close_edit(event, page)
    branches.refresh_list(event, page, handlers)
    if handlers.context.app.feedback is not None:
        page.chatbot.like(handlers.chat.on_like, [page.state, page.system_prompt], None, api_visibility="private",
                          queue=False)


# The tab's own id, kept in sessionStorage: a reload keeps it, another tab of the browser has its own.
TAB_ID_JS = """(...args) => {
  let id = sessionStorage.getItem("llava-app-tab");
  if (!id) {
    id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    sessionStorage.setItem("llava-app-tab", id);
  }
  args[args.length - 1] = id;
  return args;
}"""


def _tab_id() -> gr.Textbox:
    """A hidden box the page-load script fills with this tab's id (``TAB_ID_JS``)."""
    return gr.Textbox("", visible=False, elem_id="tab-id")


def _wire_session(page: Page, handlers: Handlers, demo: gr.Blocks) -> None:
    """Page load (the model held now; the browser's saved conversation) and tab close."""
    header = [page.model_line, page.banner]
    if page.picker is not None:
        demo.load(lambda: handlers.chat.on_page_load(with_picker=True), None, [*header, page.picker.dropdown],
                  api_visibility="private", queue=False, show_progress="hidden")
    else:
        demo.load(handlers.chat.on_page_load, None, header, api_visibility="private", queue=False,
                  show_progress="hidden")
    loaded = demo.load(handlers.chat.on_load_saved, [page.browser_key, page.state, _tab_id()],
                       [page.browser_key, page.state, page.gallery, page.question, *page.views, page.limits,
                        page.notice],
                       api_visibility="private", queue=False, show_progress="hidden", js=TAB_ID_JS)
    branches.refresh_list(loaded, page, handlers)
    demo.unload(handlers.chat.on_unload)


# ----- per visitor: kept settings, who may switch the model ------------------------------------
def _wire_preferences(page: Page, prefs: SessionHandlers, demo: gr.Blocks, app: App) -> None:
    """Settings kept in the browser and restored on load; the model picker under the operator's policy."""
    # The browser's settings (localStorage: its tabs share them, other browsers never see them).
    kept = gr.BrowserState({}, storage_key="llava-app-settings", secret=app.saved.secret())
    settings = [page.system_prompt, page.temperature, page.top_p, page.max_new]
    for control in settings:
        control.change(prefs.on_settings_change, settings, [kept], api_visibility="private", queue=False,
                       show_progress="hidden")
    demo.load(prefs.on_settings_load, [kept], settings, api_visibility="private", queue=False,
              show_progress="hidden")
    picker = page.picker
    if picker is None:
        return
    shown = [page.model_line, page.banner, picker.status, picker.dropdown]
    # One switch at a time, in a group of its own: Gradio keeps the lowest limit of a concurrency group, so
    # sharing the answers' group capped every /chat at one answer at once after the first press of Load.
    # SwitchableBackend itself lets a switch wait for the answers being written and holds new ones meanwhile.
    picker.button.click(prefs.on_switch, [picker.dropdown], shown, api_name="switch_model", concurrency_limit=1,
                        concurrency_id="model-switch", show_progress="full",
                        show_progress_on=[picker.dropdown]
                        ).failure(prefs.after_failed_switch, None, shown, api_visibility="private", queue=False)
    if picker.section is not None:
        demo.load(prefs.on_picker_load, None, [picker.section, picker.dropdown], api_visibility="private",
                  queue=False, show_progress="hidden")
