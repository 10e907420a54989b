"""The API-only endpoints on hidden components: /chat, /context, /regions, /reset, /edit, /branch, /conversations,
/open, /share and /revoke (the page's own events are wired in ``main``)."""

from __future__ import annotations

import gradio as gr

from llava_app.application import App
from llava_app.web.handlers import Handlers
from llava_app.web.page.components import Page

#: generations of the page and of the API share one concurrency group (the model)
GENERATION_CONCURRENCY_ID = "model"


def wire_api(page: Page, handlers: Handlers, app: App) -> None:
    """API-only endpoints on hidden components: /chat, /context, /reset."""
    with gr.Column(visible=False):
        message = gr.Textbox(label="message")
        images = gr.File(label="images", file_count="multiple", type="filepath")  # pictures, videos, PDFs
        urls = gr.JSON(value=[], label="urls")  # http(s) URLs, fetched with --image-urls
        regions = gr.JSON(value=[], label="regions")  # [{"image": 2, "box": [x1, y1, x2, y2]}], the picture's pixels
        turn = gr.Number(value=-1, label="turn", precision=0)
        pointed = gr.JSON(label="regions")
        answer = gr.Textbox(label="answer")
        context = gr.JSON(label="context")
        chat_btn, context_btn, reset_btn, regions_btn = gr.Button(), gr.Button(), gr.Button(), gr.Button()
    # API clients wait in Gradio's queue, which tells them their place (and when it is full).
    chat_btn.click(handlers.api.api_chat, [message, images, urls, regions, page.state], [answer, page.state],
                   api_name="chat",
                   concurrency_limit=app.service.max_concurrency, concurrency_id=GENERATION_CONCURRENCY_ID)
    context_btn.click(handlers.api.api_context, [page.state], [context], api_name="context")
    regions_btn.click(handlers.api.api_regions, [turn, page.state], [pointed], api_name="regions")
    reset_btn.click(handlers.api.api_reset, [page.state], [page.state], api_name="reset")
    _wire_branch_api(page, handlers, app, message, images, answer, context)


def _wire_branch_api(page: Page, handlers: Handlers, app: App, message, images, answer, context) -> None:
    """API-only endpoints for edits, branches and earlier chats: /edit, /branch, /conversations, /open."""
    with gr.Column(visible=False):
        turn, index = gr.Number(label="turn", precision=0), gr.Number(label="index", precision=0)
        remove = gr.JSON(value=[], label="remove")  # image numbers (or labels) taken off the edited turn
        row = gr.Textbox(label="id")
        chats = gr.JSON(label="conversations")
        edit_btn, branch_btn, chats_btn, open_btn = gr.Button(), gr.Button(), gr.Button(), gr.Button()
    edit_btn.click(handlers.api.api_edit, [turn, message, images, remove, page.state], [answer, page.state],
                   api_name="edit", concurrency_limit=app.service.max_concurrency,
                   concurrency_id=GENERATION_CONCURRENCY_ID)
    branch_btn.click(handlers.api.api_branch, [turn, index, page.state], [context, page.state], api_name="branch")
    chats_btn.click(handlers.api.api_conversations, [page.state], [chats], api_name="conversations")
    open_btn.click(handlers.api.api_open, [row, page.state], [context, page.state], api_name="open")
    if app.share_links is not None and app.share_links.enabled:
        with gr.Column(visible=False):
            shared, revoked, share_btn, revoke_btn = gr.JSON(label="share"), gr.Checkbox(), gr.Button(), gr.Button()
        share_btn.click(handlers.api.api_share, [page.state], [shared], api_name="share")
        revoke_btn.click(handlers.api.api_revoke, [row, page.state], [revoked], api_name="revoke")
