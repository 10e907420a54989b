"""What the page shows of a conversation: values for the strip, the chat, the panels (no events here)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gradio as gr

from llava_app.chat import branches
from llava_app.chat.conversation import Conversation, PromptInfo
from llava_app.chat.grounding import Region
from llava_app.messages import Joined, Message, text
from llava_app.web.boxes import colour, placement
from llava_app.web.handlers.markdown import chat_markdown
from llava_app.web.translations import localize

#: the path the page is given for a picture file (``App.shown_path`` for one conversation): never the store's
Shown = Callable[[str], str]
#: what the answer of a turn points at, and the code blocks it wrote them in (``Pointing.regions``,
#: ``grounding.raw_blocks``): ``(regions, [(start, end, count)])``
Pointer = Callable[[int], tuple[list[Region], list[tuple[int, int, int]]]]


def gallery_value(conv: Conversation, shown: Shown) -> list[tuple[str, str]]:
    """The strip shows every image of the conversation with its stable label (and, for a video's keyframe or
    a PDF's page, where it came from: "Image 2 · clip.mp4 @ 0:12")."""
    return [(shown(im.path), caption(im)) for im in conv.images]


def caption(im: Any) -> str:
    """A picture's caption: its label, and its source when it is a keyframe or a page."""
    return f"{im.label} · {im.name}" if im.video or _PAGE.search(im.name or "") else im.label


def label_of(caption_text: str) -> str:
    """The label a caption starts with."""
    return caption_text.split(" · ")[0]


_PAGE = re.compile(r"\.pdf p\. \d+$")


def chat_value(conv: Conversation, shown: Shown, partial: str | None = None, waiting: int | None = None,
               lang: str = "en", pointer: Pointer | None = None) -> list[dict[str, Any]]:
    """The chatbot's messages: each turn's images as labelled thumbnails, the question, the answer.

    ``partial`` is the answer being written for the newest turn; ``waiting`` its place in line
    while it waits for the engine. ``pointer`` says what each answer points at: those pictures follow the
    answer with their boxes drawn, and the code the model wrote them in is folded.
    """
    return [message for message, _ in _messages(conv, shown, partial, waiting, lang, pointer)]


def turn_of_message(conv: Conversation, index: Any) -> int | None:
    """The turn whose answer is message ``index`` of ``chat_value`` (its footer counts as the answer)."""
    position = index[0] if isinstance(index, (list, tuple)) else index
    laid_out = _messages(conv, lambda path: path)  # (only the roles are read)
    if not isinstance(position, int) or not 0 <= position < len(laid_out):
        return None
    message, turn = laid_out[position]
    return turn if message["role"] == "assistant" else None


def _messages(conv: Conversation, shown: Shown, partial: str | None = None, waiting: int | None = None,
              lang: str = "en", pointer: Pointer | None = None) -> list[tuple[dict[str, Any], int | None]]:
    """Each message of the chat with the turn whose answer it is (None for the rest).

    The app's own marks (stopped, in line, Edit, the footers) are in ``lang``; what people and the
    model wrote is never touched.
    """
    out: list[tuple[dict[str, Any], int | None]] = []
    mark = lambda key, **params: text(key, lang, **params)  # noqa: E731
    note = hidden_note(conv, lang)
    last = len(conv.turns) - 1
    settled = partial is None and not waiting  # no edits while an answer is written: no versions to read then
    versions = [(b["index"], b["count"]) for b in branches.describe(conv)] if settled else []
    for i, turn in enumerate(conv.turns):
        if note and i == conv.first_visible:  # a muted, folded note under the turns the model no longer sees
            out.append(({"role": "assistant", "content": note["body"],
                         "metadata": {"title": note["title"], "status": "done"}}, None))
        pictures = conv.images_for_turn(i)
        if pictures:
            out.append(({"role": "user", "content": thumbnails(pictures, shown)}, None))
        gone = sorted((im for im in conv.removed if im.joined_at == i), key=lambda im: im.number)
        if gone:  # earlier turns still read right: the picture they spoke of is named, not silently missing
            removed = " ".join(mark("mark.removed", label=im.label) for im in gone)
            out.append(({"role": "user", "content": removed}, None))
        out.append(({"role": "user", "content": chat_markdown(turn.user)}, None))
        if turn.assistant is not None and settled:
            out.append(({"role": "user", "content": turn_tools(i, *versions[i], lang=lang)}, None))
        if turn.assistant is not None:
            marks, blocks = pointer(i) if pointer is not None else ([], [])
            answer = answer_markdown(turn.assistant, blocks, lang) + ("  \n" + mark("mark.stopped") if turn.stopped
                                                                        else "")
            if turn.cut:  # the length limit, or a server that died mid-answer (kept in saves)
                answer += "  \n" + mark("mark.cut_" + turn.cut)
            if turn.interrupted:  # cut off by a server crash, a restart or a reload (``BrowserSaves.saving``)
                answer += "  \n" + mark("mark.interrupted")
            out.append(({"role": "assistant", "content": answer}, i))
            if marks:  # the pictures it points at, boxes drawn: its own message, under the answer
                pictures = {im.number: im for im in conv.images}
                out.append(({"role": "assistant", "content": boxes_html(marks, pictures, shown, lang)}, i))
            if turn.stats is not None:  # its own message: copying the answer copies the answer only
                out.append(({"role": "assistant", "content": answer_footer(turn.stats, lang)}, i))
        elif i == last and waiting:
            out.append(({"role": "assistant", "content": mark("mark.waiting", place=waiting)}, None))
        elif i == last and partial is not None:
            out.append(({"role": "assistant", "content": chat_markdown(partial)}, None))
    return out


def answer_markdown(answer: str, blocks: list[tuple[int, int, int]], lang: str = "en") -> str:
    """An answer as Markdown (``chat_markdown``), each code block that holds its boxes folded behind a line."""
    out, at = [], 0
    for start, end, count in blocks:
        summary = text("boxes.raw_one", lang) if count == 1 else text("boxes.raw", lang, count=count)
        out += [chat_markdown(answer[at:start]),
                f'\n<details class="boxes-raw"><summary>{html.escape(summary)}</summary>\n\n',
                chat_markdown(answer[start:end]), "\n\n</details>\n"]
        at = end
    out.append(chat_markdown(answer[at:]))
    return "".join(out)


def boxes_html(regions: list[Region], pictures: dict[int, Any], shown: Shown, lang: str = "en") -> str:
    """Each picture an answer points at, its boxes and points drawn over it in distinct colours and numbered,
    their labels under it (page.js lights a box while its label is hovered or tapped, and opens the picture
    large on a click); marks whose picture the answer does not make clear are listed with their coordinates."""
    esc = html.escape
    on: dict[int, list[tuple[int, Region, str]]] = {}
    unplaced: list[str] = []
    for k, region in enumerate(regions):
        name = region.label or text("boxes.unnamed", lang, number=k + 1)
        if region.image in pictures:
            on.setdefault(region.image, []).append((k, region, name))
        else:
            coords = ", ".join(f"{v:g}" for v in region.raw)
            unplaced.append(f"<span class='box-unplaced'>{k + 1}. {esc(name)} [{esc(coords)}]</span>")
    figures = []
    for number in sorted(on):
        im = pictures[number]
        width, height = max(1, im.width), max(1, im.height)
        drawn, labels = [], []
        for k, region, name in on[number]:
            place, paint = placement(width, height, region.box, region.point), colour(k)
            if region.box is not None:
                drawn.append(f'<span class="box box-{k}" style="{place};border-color:{paint}">'
                             f'<span class="box-tag" style="background:{paint}">{k + 1}</span></span>')
            else:
                drawn.append(f'<span class="box point box-{k}" style="{place};background:{paint}"></span>')
            labels.append(f'<span class="box-label box-{k}" tabindex="0"><span class="box-swatch" '
                          f'style="background:{paint}">{k + 1}</span>{esc(name)}</span>')
        source = "gradio_api/file=" + esc(quote(shown(im.path)))
        figures.append(
            f'<figure class="boxes-fig"><span class="boxes-pic" style="aspect-ratio:{width}/{height}" '
            f'title="{esc(text("boxes.open", lang, label=im.label))}"><img src="{source}" alt="{esc(im.label)}">'
            f'{"".join(drawn)}</span><figcaption><b>{esc(im.label)}</b> {"".join(labels)}</figcaption></figure>')
    if unplaced:
        figures.append(f"<p class='boxes-unplaced'>{esc(text('boxes.unplaced', lang))} {' '.join(unplaced)}</p>")
    return '<div class="llava-boxes">' + "".join(figures) + "</div>"


def turn_tools(index: int, k: int, n: int, lang: str = "en") -> str:
    """The quiet line under question ``index``: Edit, and "‹ 2/3 ›" when it is version ``k`` (0-based) of ``n``.

    Links, not buttons (the chat's sanitizer keeps links): page.js turns a click on ``#llava-…``
    into the page's action event, which ``BranchHandlers.on_action`` reads.
    """
    say = lambda key: html.escape(text(key, lang))  # noqa: E731
    parts = [f'<a href="#llava-edit-{index}" class="turn-edit" title="{say("tools.edit_title")}">'
             f'✎ {say("tools.edit")}</a>']
    if n > 1:
        back = (f'<a href="#llava-branch-{index}-{k - 1}" class="turn-prev" title="{say("tools.previous")}">‹</a>'
                if k > 0 else '<span class="turn-off">‹</span>')
        ahead = (f'<a href="#llava-branch-{index}-{k + 1}" class="turn-next" title="{say("tools.next")}">›</a>'
                 if k + 1 < n else '<span class="turn-off">›</span>')
        parts.append(f'<span class="turn-switch">{back} <span class="turn-pos">{k + 1}/{n}</span> {ahead}</span>')
    return '<span class="turn-tools">' + " ".join(parts) + "</span>"


def thumbnails(pictures: list, shown: Shown) -> Any:
    """A turn's pictures as small labelled thumbnails (a click opens one large, with its label)."""
    return gr.Gallery(value=[(shown(im.path), im.label) for im in pictures], show_label=False, columns=len(pictures),
                      fit_columns=False, height=136, object_fit="cover", allow_preview=False, interactive=False,
                      elem_classes=["turn-images"], buttons=[], container=False)


def answer_footer(stats: Any, lang: str = "en") -> str:
    """The quiet line under an answer: time in line, then to first token, tokens per second, tokens, images
    cached/encoded."""
    if stats is None:
        return ""
    parts = []
    if stats.queued_s is not None:  # apart from the first token: 14 s in line is not a slow model
        parts.append(text("footer.queued", lang, seconds=stats.queued_s))
    if stats.ttft_s is not None:
        parts.append(text("footer.first_token", lang, seconds=stats.ttft_s))
    if stats.tokens_per_s:
        parts.append(text("footer.rate", lang, rate=stats.tokens_per_s))
    parts.append(text("footer.tokens", lang, count=stats.completion_tokens))
    if stats.images_cached is not None or stats.images_encoded is not None:
        parts.append(text("footer.images", lang, cached=stats.images_cached or 0, encoded=stats.images_encoded or 0))
    return "<span class=\"answer-footer\">" + html.escape(" · ".join(parts)) + "</span>"


def prompt_stats(info: PromptInfo | None, no_prompt: str, lang: str = "en") -> str:
    """The line above "What the model sees": images and tokens of the prompt (``no_prompt`` when none)."""
    if info is None or not info.text:
        return no_prompt
    labels = html.escape(", ".join(info.image_labels)) or text("stats.no_labels", lang)
    tokens = f"~{info.n_tokens:,}" if info.estimated else info.n_tokens
    key = "stats.prompt_one" if info.n_images == 1 else "stats.prompt"  # "1 image", "0 images", "2 images"
    line = text(key, lang, images=info.n_images, labels=labels, tokens=tokens)
    if info.source != "model":  # a remote server: its own rendering, or only what the app sends it
        line += " · " + text("stats.source_" + info.source, lang)
    return line


def meter_text(conv: Conversation, window: int | None, image_tokens: int | None = None, lang: str = "en") -> str:
    """The context meter: prompt tokens (with the answer just written) / window, images and their tokens, hidden
    turns.

    ``image_tokens`` is what the conversation's images cost, when the engine knows it.
    """
    window = window or conv.context_window
    info = conv.last_prompt
    parts = []
    if info is not None and info.n_tokens:
        # the prompt of the newest turn, and the answer just written to it (the next question carries both)
        newest = conv.turns[-1] if conv.turns else None
        used = info.n_tokens + (newest.stats.completion_tokens if newest is not None and newest.stats else 0)
        parts.append(text("meter.used_of_window", lang, used=used, window=window, percent=100 * used / window)
                     if window else text("meter.used", lang, used=used))
    elif window:
        parts.append(text("meter.window", lang, window=window))
    n = len(conv.images)
    if image_tokens is None and info is not None and n and info.n_images == n:
        image_tokens = info.n_image_tokens
    key = "meter.image" if n == 1 else "meter.images"
    parts.append(text(key + "_tokens", lang, count=n, tokens=image_tokens) if n and image_tokens else
                 text(key, lang, count=n))
    if conv.first_visible:
        hidden = conv.first_visible
        parts.append(text("meter.hidden_turn" if hidden == 1 else "meter.hidden_turns", lang, count=hidden)
                     + (text("meter.summarised", lang) if conv.context_summary else ""))
    return " · ".join(parts)


def hidden_note(conv: Conversation, lang: str = "en") -> dict[str, Any] | None:
    """The muted note placed after the turns the model no longer sees (None when it sees them all)."""
    hidden = conv.first_visible
    if not hidden:
        return None
    body = (text("note.body_window", lang, window=conv.context_window) if conv.context_window else
            text("note.body", lang))
    if conv.context_summary:
        body += text("note.summary", lang, summary=conv.context_summary)
    title = text("note.title_turn", lang) if hidden == 1 else text("note.title_turns", lang, count=hidden)
    return {"title": title, "body": body}


def merged(problems: list[Message | str]) -> list[Message | str]:
    """Messages that differ only in the file they name become one ("a.png, b.png: At most 4 new images ...")."""
    names: dict[Message | str, list[str]] = {}
    for message in problems:
        named = isinstance(message, Message) and message.key == "upload.named"
        rest, name = (message.params["problem"], str(message.params["name"])) if named else (message, "")
        names.setdefault(rest, []).append(name)
    return [Message("upload.named", name=", ".join(who), problem=rest) if all(who) else rest
            for rest, who in names.items()]


def added_notice(added: list[str], problems: list[Message | str], lang: str = "en") -> str:
    """The notice under the gallery after an upload, in ``lang``: what was added, then each problem (escaped)."""
    notice = Message("notice.added", labels=", ".join(added)) if added else ""
    return Joined([notice, *(plain(p, lang) for p in problems)]).render(lang)


def plain(text: Message | str, lang: str = "en") -> str:
    """A message for a toast (which renders HTML), in ``lang``: shown as written, never as markup."""
    return html.escape(localize(text, lang), quote=False)


def chats_html(entries: list[dict[str, Any]], limits: dict[str, Any], shown: Shown, lang: str = "en") -> str:
    """This browser's earlier chats, newest first: thumbnails, title, turns and date, with Rename and Delete
    (links page.js passes on, as for ``turn_tools``); then how long they are kept. Every text escaped."""
    esc, say = html.escape, lambda key, **params: html.escape(text(key, lang, **params))
    if not limits:
        return f"<p class='chat-limits'>{say('list.not_saved')}</p>"
    rows = []
    for entry in entries:
        row, title = esc(str(entry["id"])), esc(str(entry.get("title") or text("list.untitled", lang)))
        thumbs = "".join(f"<img src='gradio_api/file={esc(quote(shown(path)))}' alt=''>"
                         for path in entry.get("thumbnails", [])[:3])
        when = time.localtime(float(entry.get("updated") or 0))
        when = text("date.day_time", lang, day=when.tm_mday, month=Message(f"date.month.{when.tm_mon}"),
                    time=time.strftime("%H:%M", when))
        turns = entry.get("turns", 0)
        meta = f"{text('list.turn' if turns == 1 else 'list.turns', lang, count=turns)} · {when}"
        current = " current" if entry.get("current") else ""
        rows.append(f"<li class='chat-item{current}' data-chat='{row}'>"
                    f"<a href='#llava-open-{row}' class='chat-open' title='{say('list.open')}'>"
                    f"<span class='chat-thumbs'>{thumbs}</span><span class='chat-text'>"
                    f"<span class='chat-title'>{title}</span><span class='chat-meta'>{esc(meta)}</span></span></a>"
                    f"<a href='#llava-rename-{row}' class='chat-rename' title='{say('list.rename')}' "
                    f"data-title='{title}'>✎</a>"
                    f"<a href='#llava-delete-{row}' class='chat-delete' title='{say('list.delete')}'>✕</a></li>")
    listed = f"<ul class='chat-items'>{''.join(rows)}</ul>" if rows else \
        f"<p class='chat-empty'>{say('list.empty')}</p>"
    days = limits.get("days") or 0
    kept = ("list.kept_day" if days == 1 else "list.kept_days") if days else "list.kept"
    return listed + f"<p class='chat-limits'>{say(kept, days=days, mb=limits.get('max_mb', 0))}</p>"


def share_text(url: str, expires: float, lang: str = "en") -> str:
    """What Share made: the read-only link and until when it opens."""
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return (text("share.link", lang, until=until) + "  \n"
            f"<a href='{html.escape(url)}' target='_blank' rel='noopener noreferrer' class='share-url'>"
            f"{html.escape(url)}</a>")
