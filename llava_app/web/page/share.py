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

from llava_app.chat.examples import language_of
from llava_app.chat.grounding import CONVENTIONS, raw_blocks
from llava_app.chat.sharing import ShareLinks
from llava_app.messages import text
from llava_app.web.boxes import colour, placement

#: the snapshot's URL must not leave with a link followed from it, nor be indexed or cached on the way
HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow", "Cache-Control": "no-store"}

STYLE = """
:root { color-scheme: light dark; --accent: #6366f1; --user: #eef2ff; --bot: #f4f4f5; --line: #e4e4e7; }
@media (prefers-color-scheme: dark) { :root { --user: #312e81; --bot: #27272a; --line: #3f3f46; } }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 860px; margin: 0 auto;
  padding: 0 16px 24px; line-height: 1.55; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 14px;
  padding: 12px 0; background: Canvas; border-bottom: 1px solid var(--line); }
header h1 { font-size: 20px; margin: 0; } header .model { font-size: 13px; opacity: .75; }
header .model code { font-size: 12px; }
.turn { margin: 18px 0; display: flex; flex-direction: column; gap: 8px; }
.pics { display: flex; flex-wrap: wrap; justify-content: flex-end; gap: 6px; }
.pics figure { margin: 0; text-align: center; } .pics img { width: 128px; height: 96px; object-fit: cover;
  border-radius: 8px; border: 1px solid var(--line); }
figcaption { font-size: 12px; opacity: .75; }
.q, .a { white-space: pre-wrap; padding: 10px 14px; border-radius: 14px; max-width: 85%; overflow-wrap: anywhere; }
.q { background: var(--user); align-self: flex-end; border-bottom-right-radius: 4px; }
.answer { align-self: flex-start; max-width: 85%; display: flex; flex-direction: column; gap: 6px; }
.a { background: var(--bot); max-width: none; border-bottom-left-radius: 4px; }
.copy { align-self: flex-start; min-height: 32px; padding: 0 12px; border-radius: 8px; border: 1px solid var(--line);
  background: transparent; color: inherit; font: inherit; font-size: 13px; cursor: pointer; }
details summary { cursor: pointer; font-size: 13px; opacity: .75; }
footer { font-size: 13px; opacity: .7; margin-top: 24px; border-top: 1px solid var(--line); padding-top: 12px; }
.pointed { display: flex; flex-wrap: wrap; gap: 10px; } .pointed figure { margin: 0; }
.pic { position: relative; display: inline-block; line-height: 0; }
.pic img { width: 280px; max-width: 100%; height: auto; border-radius: 6px; }
.box { position: absolute; border: 2px solid; }
.box b { position: absolute; left: -1px; top: -1px; color: #fff; font: 600 11px/15px system-ui; padding: 0 4px; }
.pt { position: absolute; width: 12px; height: 12px; margin: -6px 0 0 -6px; border-radius: 50%;
  border: 2px solid #fff; }
.pointed figcaption span { margin-right: 10px; } .pointed figcaption i { font-style: normal; color: #fff;
  padding: 0 5px; border-radius: 4px; margin-right: 4px; }
"""
#: each answer's Copy button copies its text (what the model wrote, as shown); served at ``SCRIPT_PATH``
SCRIPT_PATH = "/share-copy.js"
SCRIPT = """
for (const button of document.querySelectorAll('button.copy')) {
  button.addEventListener('click', async () => {
    const text = button.closest('.answer').querySelector('.a').innerText;
    try { await navigator.clipboard.writeText(text); } catch (e) {
      const range = document.createRange(); range.selectNodeContents(button.closest('.answer').querySelector('.a'));
      const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range); document.execCommand('copy');
    }
    const said = button.textContent; button.textContent = button.dataset.done;
    setTimeout(() => { button.textContent = said; }, 1500);
  });
}
"""


def not_found(lang: str = "en") -> str:
    """The page of an unknown, expired or revoked link."""
    title, why = html.escape(text("sharepage.title", lang)), html.escape(text("sharepage.not_found", lang))
    return f"<!doctype html><html lang='{lang}'><meta charset='utf-8'><title>{title}</title><p>{why}</p></html>"


def render(token: str, record, expires: float, regions: list[list[dict]] | None = None, lang: str = "en") -> str:
    """The snapshot as an HTML page in ``lang`` (every text escaped), the app's look: questions on the right, answers
    on the left with a Copy button, each turn's pictures; under each answer, the pictures it points at with the
    boxes drawn (``regions``: ``/regions``' entries, one list per turn)."""
    esc = html.escape
    say = lambda key, **params: esc(text(key, lang, **params))  # noqa: E731
    parts = [f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{say('sharepage.title')}</title><style>{STYLE}</style></head><body>",
             f"<header><h1>{say('sharepage.title')}</h1>"]
    if record.model:
        parts.append(f"<span class='model'>{say('sharepage.model', model=record.model)}</span>")
    parts.append("</header>")
    for i, turn in enumerate(record.turns):
        parts.append("<div class='turn'>")
        pictures = record.images_of_turn(i)
        if pictures:
            parts.append("<div class='pics'>" + "".join(
                f"<figure><img src='/share/{esc(token)}/image/{im.number}' alt='{esc(im.label)}'>"
                f"<figcaption>{esc(im.label)}</figcaption></figure>" for im in pictures) + "</div>")
        parts.append(f"<div class='q'>{esc(turn.user)}</div>")
        if turn.assistant is not None:
            pointed = regions[i] if regions and i < len(regions) else []
            parts.append(f"<div class='answer'><div class='a'>{_answer(turn.assistant, bool(pointed), lang)}</div>"
                         + _pointed(token, record, pointed, lang)
                         + f"<button type='button' class='copy' title='{say('sharepage.copy_title')}' "
                           f"data-done='{say('sharepage.copied')}'>{say('sharepage.copy')}</button></div>")
        parts.append("</div>")
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    parts.append(f"<footer>{say('sharepage.footer', until=until)}</footer><script src='{SCRIPT_PATH}'></script>"
                 "</body></html>")
    return "".join(parts)


def _answer(answer: str, pointed: bool, lang: str) -> str:
    """An answer, escaped; where it points at something, the code blocks holding its boxes folded (as in the chat)."""
    esc, out, at = html.escape, [], 0
    for start, end, count in raw_blocks(answer, CONVENTIONS["qwen2.5-vl"]) if pointed else []:
        summary = text("boxes.raw_one", lang) if count == 1 else text("boxes.raw", lang, count=count)
        out += [esc(answer[at:start]), f"<details><summary>{esc(summary)}</summary>{esc(answer[start:end])}</details>"]
        at = end
    return "".join(out) + esc(answer[at:])


def _pointed(token: str, record, entries: list[dict], lang: str = "en") -> str:
    """The pictures an answer points at, each box numbered in its colour, its label under the picture."""
    esc, figures, unplaced = html.escape, {}, []
    pictures = {im.label: im for im in record.images}
    for k, entry in enumerate(entries):
        im = pictures.get(entry.get("image") or "")
        paint = colour(k)
        name = esc(str(entry.get("label") or text("boxes.unnamed", lang, number=k + 1)))
        if im is None:
            unplaced.append(f"{k + 1}. {name} {esc(str(entry.get('coords')))}")
            continue
        place = placement(im.width, im.height, entry.get("box"), entry.get("point"))
        mark = (f"<span class='box' style='{place};border-color:{paint}'><b style='background:{paint}'>{k + 1}</b>"
                f"</span>" if "box" in entry else f"<span class='pt' style='{place};background:{paint}'></span>")
        _, marks, labels = figures.setdefault(im.number, (im, [], []))
        marks.append(mark)
        labels.append(f"<span><i style='background:{paint}'>{k + 1}</i>{name}</span>")
    out = []
    for number, (im, marks, labels) in sorted(figures.items()):
        out.append(f"<figure><span class='pic'><img src='/share/{esc(token)}/image/{number}' "
                   f"alt='{esc(im.label)}'>{''.join(marks)}</span>"
                   f"<figcaption><b>{esc(im.label)}</b> {''.join(labels)}</figcaption></figure>")
    if unplaced:
        out.append(f"<p>{esc(text('boxes.unplaced', lang))} " + "; ".join(unplaced) + "</p>")
    return f"<div class='pointed'>{''.join(out)}</div>" if out else ""


def share_routes(links: ShareLinks, pointed: Callable[[Any], list[list[dict]]] | None = None) -> list[Route]:
    """The routes of shared snapshots over ``links`` (``pointed``: what each answer of a record points at)."""

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        found = await anyio.to_thread.run_sync(links.open, token)
        lang = language_of(request.headers.get("accept-language"))
        if found is None:
            return HTMLResponse(not_found(lang), status_code=404, headers=HEADERS)
        record, expires = found
        regions = await anyio.to_thread.run_sync(pointed, record) if pointed else None
        return HTMLResponse(render(token, record, expires, regions, lang), headers=HEADERS)

    async def image(request: Request) -> Response:
        found = await anyio.to_thread.run_sync(links.open, request.path_params["token"])
        number = request.path_params["number"]
        im = next((im for im in found[0].images if im.number == number), None) if found else None
        if im is None or im.sha256 not in found[0].files:
            return Response("Not found", status_code=404, headers=HEADERS)
        return FileResponse(found[0].files[im.sha256], media_type="image/png", headers=HEADERS)

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    return [Route(SCRIPT_PATH, script, methods=["GET"]), Route("/share/{token}", page, methods=["GET"]),
            Route("/share/{token}/image/{number:int}", image, methods=["GET"])]
