"""How the page is served: launch and queue settings, the login, the /v1 routes, security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from llava_app.application import App
from llava_app.config import Config
from llava_app.web.auth import load_users
from llava_app.web.gradio_compat import skip_absent_matplotlib
from llava_app.web.i18n import I18N

WEB = Path(__file__).resolve().parent
CSS = (WEB / "style.css").read_text(encoding="utf-8")
JS = (WEB / "page.js").read_text(encoding="utf-8")

#: Gradio's own upload cap, as a multiple of --max-upload-mb
UPLOAD_HARD_CAP = 4

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


def launch_kwargs(app: App) -> dict[str, Any]:
    """Arguments for ``demo.launch`` that the app and the tests share."""
    config = app.config
    kwargs = dict(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        # Gradio refuses only what is far over the limit (with a bare error): a file merely too big
        # reaches our handlers, which say so with both sizes ("photo.jpg is 27 MB; the limit is 20 MB").
        max_file_size=config.max_upload_bytes * UPLOAD_HARD_CAP,
        allowed_paths=[str(app.image_root), str(app.exports_dir), *filter(None, [app.saved.files_dir])],
        i18n=I18N,
        # The stylesheet goes in as written (Gradio rewrites what it gets as ``css``: its media
        # queries would no longer match the page's body).
        head=f"<style>{CSS}</style>",
        js=JS,
        theme=gr.themes.Soft(),
        show_error=False,
        app_kwargs={"middleware": [Middleware(ContentSecurityPolicy)]},
        auth=load_users(config.auth, config.auth_file),
        auth_message="Sign in to use this demo.",
    )
    if config.openai_api:
        from llava_app.web.openai_api import build_router

        # Routes given to the FastAPI app that launch() creates: served from its first request on.
        kwargs["app_kwargs"]["routes"] = build_router(app.service, config).routes
    if app.share_links is not None and app.share_links.enabled:
        from llava_app.web.share_page import share_routes

        kwargs["app_kwargs"].setdefault("routes", []).extend(share_routes(app.share_links))  # no login: by design
    return kwargs


def queue_kwargs(config: Config) -> dict[str, Any]:
    """Arguments for ``demo.queue``."""
    return dict(max_size=config.queue_size, default_concurrency_limit=4)


def launch(app: App, demo: gr.Blocks, **extra: Any) -> None:
    """Queue and launch ``demo`` as configured (``extra`` goes to ``launch``, e.g. ``prevent_thread_lock``)."""
    skip_absent_matplotlib()
    demo.queue(**queue_kwargs(app.config)).launch(**launch_kwargs(app), **extra)
