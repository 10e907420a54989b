"""The read-only page of a shared snapshot: ``/share/<token>`` and its images, no Gradio, no login.

Served beside the page like the ``/v1`` routes (``server.launch_kwargs``). The page is plain
HTML written here with every text escaped: the questions and answers, each turn's pictures,
and when the link expires. It has no question box and shows nothing of any other
conversation; an unknown, expired or revoked link is a 404.
"""

from __future__ import annotations

import html
import time

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from llava_app.chat.sharing import ShareLinks

#: the snapshot's URL must not leave with a link followed from it, nor be indexed or cached on the way
HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow", "Cache-Control": "no-store"}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 760px; margin: 0 auto; padding: 16px; line-height: 1.5; }
.turn { margin: 16px 0; } .q, .a { white-space: pre-wrap; padding: 8px 12px; border-radius: 12px; }
.q { background: #eef2ff; margin-left: 15%; } .a { background: #f4f4f5; margin-right: 15%; }
figure { display: inline-block; margin: 4px; } img { max-width: 220px; max-height: 220px; border-radius: 8px; }
figcaption { font-size: 12px; opacity: .7; } footer { font-size: 13px; opacity: .7; margin-top: 24px; }
"""

NOT_FOUND = "<!doctype html><title>Not found</title><p>This shared conversation does not exist, expired or was revoked."


def render(token: str, record, expires: float) -> str:
    """The snapshot as an HTML page (every text escaped)."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>Shared conversation</title><style>{STYLE}</style></head><body>",
             "<h1>Shared conversation</h1>"]
    if record.model:
        parts.append(f"<p>Answers by {esc(record.model)}.</p>")
    for i, turn in enumerate(record.turns):
        parts.append("<div class='turn'>")
        for im in record.images_of_turn(i):
            parts.append(f"<figure><img src='/share/{esc(token)}/image/{im.number}' alt='{esc(im.label)}'>"
                         f"<figcaption>{esc(im.label)}</figcaption></figure>")
        parts.append(f"<div class='q'>{esc(turn.user)}</div>")
        parts.append(f"<div class='a'>{esc(turn.assistant or '')}</div></div>")
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    parts.append(f"<footer>A read-only snapshot. This link works until {esc(until)}.</footer></body></html>")
    return "".join(parts)


def share_routes(links: ShareLinks) -> list[Route]:
    """The routes of shared snapshots over ``links``."""

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = await anyio.to_thread.run_sync(links.open, token)
        if found is None:
            return HTMLResponse(NOT_FOUND, status_code=404, headers=HEADERS)
        return HTMLResponse(render(token, *found), headers=HEADERS)

    async def image(request: Request) -> Response:
        found = await anyio.to_thread.run_sync(links.open, request.path_params["token"])
        number = request.path_params["number"]
        im = next((im for im in found[0].images if im.number == number), None) if found else None
        if im is None or im.sha256 not in found[0].files:
            return Response("Not found", status_code=404, headers=HEADERS)
        return FileResponse(found[0].files[im.sha256], media_type="image/png", headers=HEADERS)

    return [Route("/share/{token}", page, methods=["GET"]),
            Route("/share/{token}/image/{number:int}", image, methods=["GET"])]
