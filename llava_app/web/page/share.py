"""The read-only page of a shared snapshot: ``/share/<token>`` and its images, no Gradio, no login.

Served beside the page like the ``/v1`` routes (``server.launch_kwargs``). The page is plain
HTML written here with every text escaped: the questions and answers, each turn's pictures,
and when the link expires. It has no question box and shows nothing of any other
conversation; an unknown, expired or revoked link is a 404.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

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
.pointed { margin-right: 15%; } .pic { position: relative; display: inline-block; line-height: 0; }
.pic img { max-width: 100%; max-height: none; width: 320px; }
.box { position: absolute; border: 2px solid; box-sizing: border-box; }
.box b { position: absolute; left: -2px; top: -18px; color: #fff; font: 11px/16px system-ui; padding: 0 4px; }
.pt { position: absolute; width: 10px; height: 10px; margin: -5px 0 0 -5px; border-radius: 50%;
  border: 2px solid #fff; }
.pointed figcaption span { margin-right: 10px; } .pointed figcaption i { font-style: normal; color: #fff;
  padding: 0 5px; border-radius: 4px; margin-right: 4px; }
"""
#: the page's colours for boxes (the chat's ``views.PALETTE``)
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324", "#800000",
           "#000075")

NOT_FOUND = "<!doctype html><title>Not found</title><p>This shared conversation does not exist, expired or was revoked."


def render(token: str, record, expires: float, regions: list[list[dict]] | None = None) -> str:
    """The snapshot as an HTML page (every text escaped); under each answer, the pictures it points at with the
    boxes drawn (``regions``: ``/regions``' entries, one list per turn)."""
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
        parts.append(f"<div class='a'>{esc(turn.assistant or '')}</div>")
        parts.append(_pointed(token, record, regions[i] if regions and i < len(regions) else []) + "</div>")
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    parts.append(f"<footer>A read-only snapshot. This link works until {esc(until)}.</footer></body></html>")
    return "".join(parts)


def _pointed(token: str, record, entries: list[dict]) -> str:
    """The pictures an answer points at, each box numbered in its colour, its label under the picture."""
    esc, figures, unplaced = html.escape, {}, []
    pictures = {im.label: im for im in record.images}
    for k, entry in enumerate(entries):
        im = pictures.get(entry.get("image") or "")
        colour, name = PALETTE[k % len(PALETTE)], esc(str(entry.get("label") or f"box {k + 1}"))
        if im is None:
            unplaced.append(f"{k + 1}. {name} {esc(str(entry.get('coords')))}")
            continue
        width, height = max(1, im.width), max(1, im.height)
        if "box" in entry:
            x1, y1, x2, y2 = entry["box"]
            mark = (f"<span class='box' style='left:{100 * x1 / width:.2f}%;top:{100 * y1 / height:.2f}%;"
                    f"width:{100 * (x2 - x1) / width:.2f}%;height:{100 * (y2 - y1) / height:.2f}%;"
                    f"border-color:{colour}'><b style='background:{colour}'>{k + 1}</b></span>")
        else:
            x, y = entry["point"]
            mark = (f"<span class='pt' style='left:{100 * x / width:.2f}%;top:{100 * y / height:.2f}%;"
                    f"background:{colour}'></span>")
        marks, labels = figures.setdefault(im.number, ([], []))
        marks.append(mark)
        labels.append(f"<span><i style='background:{colour}'>{k + 1}</i>{name}</span>")
    out = []
    for number, (marks, labels) in sorted(figures.items()):
        out.append(f"<figure><span class='pic'><img src='/share/{esc(token)}/image/{number}' "
                   f"alt='{esc(f'Image {number}')}'>{''.join(marks)}</span>"
                   f"<figcaption><b>Image {number}</b> {''.join(labels)}</figcaption></figure>")
    if unplaced:
        out.append("<p>Not drawn (the answer does not say on which picture): " + "; ".join(unplaced) + "</p>")
    return f"<div class='pointed'>{''.join(out)}</div>" if out else ""


def share_routes(links: ShareLinks, pointed: Callable[[Any], list[list[dict]]] | None = None) -> list[Route]:
    """The routes of shared snapshots over ``links`` (``pointed``: what each answer of a record points at)."""

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = await anyio.to_thread.run_sync(links.open, token)
        if found is None:
            return HTMLResponse(NOT_FOUND, status_code=404, headers=HEADERS)
        record, expires = found
        regions = await anyio.to_thread.run_sync(pointed, record) if pointed else None
        return HTMLResponse(render(token, record, expires, regions), headers=HEADERS)

    async def image(request: Request) -> Response:
        found = await anyio.to_thread.run_sync(links.open, request.path_params["token"])
        number = request.path_params["number"]
        im = next((im for im in found[0].images if im.number == number), None) if found else None
        if im is None or im.sha256 not in found[0].files:
            return Response("Not found", status_code=404, headers=HEADERS)
        return FileResponse(found[0].files[im.sha256], media_type="image/png", headers=HEADERS)

    return [Route("/share/{token}", page, methods=["GET"]),
            Route("/share/{token}/image/{number:int}", image, methods=["GET"])]
