"""How the page is served: launch and queue settings, the login, the /v1 routes, security headers."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from llava_app.application import App
from llava_app.config import Config
from llava_app.web.auth import load_users
from llava_app.web.gradio_compat import (
    app_made_at_launch,
    patient_startup_check,
    poll_queue_less,
    skip_absent_matplotlib,
)
from llava_app.web.i18n import I18N, page_script

log = logging.getLogger(__name__)

#: the page's own stylesheet and script, beside its layout
PAGE = Path(__file__).resolve().parent / "page"
CSS = (PAGE / "style.css").read_text(encoding="utf-8")
JS = page_script((PAGE / "page.js").read_text(encoding="utf-8"))
#: a script that must run before Gradio's own (``HeadScript``): it ends the animation loops of Gradio's status
#: trackers once no tracker shows a pending event (an idle page asks for no frames)
HEAD_SCRIPT = (PAGE / "timer_fix.js").read_text(encoding="utf-8")

#: Gradio's own upload cap, as a multiple of --max-upload-mb
UPLOAD_HARD_CAP = 4

# Images in the page come from this server only: a picture in a question or an answer that
# points elsewhere never loads (a second guard behind ``handlers.markdown.chat_markdown``).
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


class HeadScript:
    """ASGI middleware putting ``script`` first in the ``<head>`` of Gradio's pages, before Gradio's scripts.

    Gradio adds what it gets as ``head=`` from its own script, once the page has loaded: too late for a script
    that must change what Gradio's modules take when they load. Only complete HTML pages with a ``<gradio-app>``
    change (the page and its login screen); every other response passes as it came.
    """

    def __init__(self, app, script: str = HEAD_SCRIPT):
        self.app, self.tag = app, b"<head><script>" + script.encode() + b"</script>"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        body = bytearray()

        async def send_with_script(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                    held["start"] = message  # sent with the body, once its length is known
                    return
            elif "start" in held:
                body.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                page = bytes(body)
                if b"<gradio-app" in page:
                    page = page.replace(b"<head>", self.tag, 1)
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
                message = {"type": "http.response.body", "body": page}
            await send(message)

        return await self.app(scope, receive, send_with_script)


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
        # The page is given each conversation's pictures under its own unguessable folder (``app.shown``); the
        # store and the saved copies are named by content hash, so they (and the instances' leases) are never
        # served. Exports are handed over through Gradio's cache (their folder is allowed so it may copy them).
        allowed_paths=[str(app.shown.root), str(app.exports_dir)],
        blocked_paths=[str(app.image_root), *filter(None, [app.saved.files_dir])],
        i18n=I18N,
        # The stylesheet goes in as written (Gradio rewrites what it gets as ``css``: its media
        # queries would no longer match the page's body).
        head=f"<style>{CSS}</style>",
        js=JS,
        theme=gr.themes.Soft(),
        show_error=False,
        app_kwargs={"middleware": [Middleware(ContentSecurityPolicy), Middleware(HeadScript)]},
        auth=load_users(config.auth, config.auth_file),
        auth_message="Sign in to use this demo.",
    )
    if config.openai_api:
        from llava_app.web.openai.endpoint import build_router

        # Routes given to the FastAPI app that launch() creates: served from its first request on.
        kwargs["app_kwargs"]["routes"] = build_router(app.service, config).routes
    if app.share_links is not None and app.share_links.enabled:
        from llava_app.web.page.share import share_routes

        routes = share_routes(app.share_links, app.service.record_regions)
        kwargs["app_kwargs"].setdefault("routes", []).extend(routes)  # no login: by design
    return kwargs


def queue_kwargs(config: Config) -> dict[str, Any]:
    """Arguments for ``demo.queue``."""
    return dict(max_size=config.queue_size, default_concurrency_limit=4)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """Ctrl+C (SIGINT) and a service manager's stop (SIGTERM: ``docker stop``, a Space restarting) both end
    the server the way Gradio ends it on Ctrl+C, so that ``atexit`` runs and the store's lease is withdrawn.

    Python's default SIGTERM ends the process at once, without ``atexit``; and a process started with
    SIGINT ignored (a shell script's ``python app.py &``) never sees Ctrl+C or ``kill -INT`` at all,
    since Python keeps an inherited "ignore" (and an inherited signal mask). Uvicorn, the server under Gradio,
    takes both signals itself when it owns the main thread; under Gradio it runs in a thread and cannot.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    for sig in stops:
        signal.signal(sig, _raise_interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # nor kept blocked, were the parent's mask to block them


def launch(app: App, demo: gr.Blocks, **extra: Any) -> None:
    """Queue and launch ``demo`` as configured (``extra`` goes to ``launch``, e.g. ``prevent_thread_lock``).

    Blocking (the app's own launch), it stops cleanly on SIGINT and SIGTERM, also when one comes while
    Gradio is still starting up (before its own wait, which catches Ctrl+C, begins).
    """
    skip_absent_matplotlib()
    patient_startup_check()
    blocking = not extra.get("prevent_thread_lock")
    if blocking:
        stop_on_signals()
    try:
        with app_made_at_launch():
            demo.queue(**queue_kwargs(app.config))
        poll_queue_less(demo)
        demo.launch(**launch_kwargs(app), **extra)
    except KeyboardInterrupt as stop:
        if not blocking:
            raise
        log.info("stopped by %s", stop or "SIGINT")
        demo.close()
