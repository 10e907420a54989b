"""What the page shows of a conversation: values for the strip, the chat, the panels (no events here)."""

from __future__ import annotations

import functools
import html
import re
import time
from typing import Any
from urllib.parse import quote

import gradio as gr

from llava_app.chat import branches
from llava_app.chat.conversation import Conversation, PromptInfo
from llava_app.web.handlers.markdown import chat_markdown
from llava_app.web.translations import localize


def gallery_value(conv: Conversation) -> list[tuple[str, str]]:
    """The strip shows every image of the conversation with its stable label (and, for a video's keyframe or
    a PDF's page, where it came from: "Image 2 · clip.mp4 @ 0:12")."""
    return [(im.path, caption(im)) for im in conv.images]


def caption(im: Any) -> str:
    """A picture's caption: its label, and its source when it is a keyframe or a page."""
    return f"{im.label} · {im.name}" if im.video or _PAGE.search(im.name or "") else im.label


def label_of(caption_text: str) -> str:
    """The label a caption starts with."""
    return caption_text.split(" · ")[0]


_PAGE = re.compile(r"\.pdf p\. \d+$")


def chat_value(conv: Conversation, partial: str | None = None, waiting: int | None = None,
               lang: str = "en") -> list[dict[str, Any]]:
    """The chatbot's messages: each turn's images as labelled thumbnails, the question, the answer.

    ``partial`` is the answer being written for the newest turn; ``waiting`` its place in line
    while it waits for the engine.
    """
    return [message for message, _ in _messages(conv, partial, waiting, lang)]


def turn_of_message(conv: Conversation, index: Any) -> int | None:
    """The turn whose answer is message ``index`` of ``chat_value`` (its footer counts as the answer)."""
    position = index[0] if isinstance(index, (list, tuple)) else index
    laid_out = _messages(conv)
    if not isinstance(position, int) or not 0 <= position < len(laid_out):
        return None
    message, turn = laid_out[position]
    return turn if message["role"] == "assistant" else None


def _messages(conv: Conversation, partial: str | None = None, waiting: int | None = None, lang: str = "en"
              ) -> list[tuple[dict[str, Any], int | None]]:
    """Each message of the chat with the turn whose answer it is (None for the rest).

    The app's own marks (stopped, in line, Edit, the footers) are in ``lang``; what people and the
    model wrote is never touched.
    """
    out: list[tuple[dict[str, Any], int | None]] = []
    mark = lambda text: _mark(text, lang)  # noqa: E731
    note = hidden_note(conv)
    last = len(conv.turns) - 1
    settled = partial is None and not waiting  # no edits while an answer is written: no versions to read then
    versions = [(b["index"], b["count"]) for b in branches.describe(conv)] if settled else []
    for i, turn in enumerate(conv.turns):
        if note and i == conv.first_visible:  # a muted, folded note under the turns the model no longer sees
            out.append(({"role": "assistant", "content": note["body"],
                         "metadata": {"title": note["title"], "status": "done"}}, None))
        pictures = conv.images_for_turn(i)
        if pictures:
            out.append(({"role": "user", "content": thumbnails(pictures)}, None))
        gone = sorted((im for im in conv.removed if im.joined_at == i), key=lambda im: im.number)
        if gone:  # earlier turns still read right: the picture they spoke of is named, not silently missing
            out.append(({"role": "user", "content": mark(" ".join(f"*[{im.label}, removed]*" for im in gone))}, None))
        out.append(({"role": "user", "content": chat_markdown(turn.user)}, None))
        if turn.assistant is not None and settled:
            out.append(({"role": "user", "content": mark(turn_tools(i, *versions[i]))}, None))
        if turn.assistant is not None:
            answer = chat_markdown(turn.assistant) + (mark("  \n*(stopped)*") if turn.stopped else "")
            if turn.interrupted:  # cut off by a server crash, a restart or a reload (``BrowserSaves.saving``)
                answer += mark("  \n*(interrupted: cut off before the end; Regenerate writes it again)*")
            out.append(({"role": "assistant", "content": answer}, i))
            if turn.stats is not None:  # its own message: copying the answer copies the answer only
                out.append(({"role": "assistant", "content": mark(answer_footer(turn.stats))}, i))
        elif i == last and waiting:
            out.append(({"role": "assistant", "content": mark(f"*{ordinal(waiting)} in line: your answer starts as "
                                                              "soon as the model is free…*")}, None))
        elif i == last and partial is not None:
            out.append(({"role": "assistant", "content": chat_markdown(partial)}, None))
    return out


@functools.lru_cache(maxsize=1024)
def _mark(text: str, lang: str) -> str:
    """One of the chat's own marks in ``lang``. The chat is laid out again for every streamed chunk, with
    every earlier turn's footer and tools, and the translation table's ~50 patterns take ~130 µs a
    footer: each mark is translated once."""
    return localize(text, lang)


def turn_tools(index: int, k: int, n: int) -> str:
    """The quiet line under question ``index``: Edit, and "‹ 2/3 ›" when it is version ``k`` (0-based) of ``n``.

    Links, not buttons (the chat's sanitizer keeps links): page.js turns a click on ``#llava-…``
    into the page's action event, which ``BranchHandlers.on_action`` reads.
    """
    parts = [f'<a href="#llava-edit-{index}" class="turn-edit" title="Edit this question">✎ Edit</a>']
    if n > 1:
        back = (f'<a href="#llava-branch-{index}-{k - 1}" class="turn-prev" title="Previous version">‹</a>'
                if k > 0 else '<span class="turn-off">‹</span>')
        ahead = (f'<a href="#llava-branch-{index}-{k + 1}" class="turn-next" title="Next version">›</a>'
                 if k + 1 < n else '<span class="turn-off">›</span>')
        parts.append(f'<span class="turn-switch">{back} <span class="turn-pos">{k + 1}/{n}</span> {ahead}</span>')
    return '<span class="turn-tools">' + " ".join(parts) + "</span>"


def thumbnails(pictures: list) -> Any:
    """A turn's pictures as small labelled thumbnails (a click opens one large, with its label)."""
    return gr.Gallery(value=[(im.path, im.label) for im in pictures], show_label=False, columns=len(pictures),
                      fit_columns=False, height=136, object_fit="cover", allow_preview=False, interactive=False,
                      elem_classes=["turn-images"], buttons=[], container=False)


def answer_footer(stats: Any) -> str:
    """The quiet line under an answer: time to first token, tokens per second, tokens, images cached/encoded."""
    if stats is None:
        return ""
    parts = []
    if stats.ttft_s is not None:
        parts.append(f"first token {stats.ttft_s:.2f} s")
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.0f} tok/s")
    parts.append(f"{stats.completion_tokens} tokens")
    if stats.images_cached is not None or stats.images_encoded is not None:
        parts.append(f"{stats.images_cached or 0} image(s) from the cache · {stats.images_encoded or 0} encoded")
    return "<span class=\"answer-footer\">" + html.escape(" · ".join(parts)) + "</span>"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def prompt_stats(info: PromptInfo | None, no_prompt: str) -> str:
    """The line above "What the model sees": images and tokens of the prompt (``no_prompt`` when none)."""
    if info is None or not info.text:
        return no_prompt
    labels = ", ".join(info.image_labels) or "none"
    return f"**{info.n_images}** image(s) in the prompt ({html.escape(labels)}) · **{info.n_tokens}** prompt tokens"


def meter_text(conv: Conversation, window: int | None, image_tokens: int | None = None) -> str:
    """The context meter: prompt tokens / window, images and their tokens, hidden turns.

    ``image_tokens`` is what the conversation's images cost, when the engine knows it.
    """
    window = window or conv.context_window
    info = conv.last_prompt
    parts = []
    if info is not None and info.n_tokens:
        used = f"**{info.n_tokens:,}**" + (f" / {window:,} tokens ({100 * info.n_tokens / window:.0f}%)"
                                          if window else " tokens")
        parts.append(f"Context: {used}")
    elif window:
        parts.append(f"Context window: {window:,} tokens")
    n = len(conv.images)
    if image_tokens is None and info is not None and n and info.n_images == n:
        image_tokens = info.n_image_tokens
    label = f"{n} image" + ("" if n == 1 else "s")
    parts.append(label + (f" ({image_tokens:,} tokens)" if n and image_tokens else ""))
    if conv.first_visible:
        hidden = conv.first_visible
        parts.append(f"{hidden} earlier turn{'' if hidden == 1 else 's'} no longer seen by the model"
                     + (" (summarised)" if conv.context_summary else ""))
    return " · ".join(parts)


def hidden_note(conv: Conversation) -> dict[str, Any] | None:
    """The muted note placed after the turns the model no longer sees (None when it sees them all)."""
    hidden = conv.first_visible
    if not hidden:
        return None
    window = f"its {conv.context_window:,}-token" if conv.context_window else "its"
    body = (f"They no longer fit in {window} context window; every image in the gallery is still in its prompt.")
    if conv.context_summary:
        body += f"\n\nIt keeps this summary of them instead: *{conv.context_summary}*"
    title = f"The model no longer sees the {'turn' if hidden == 1 else f'{hidden} turns'} above"
    return {"title": title, "body": body}


def merged(problems: list[str]) -> list[str]:
    """Messages that differ only in the file they name become one ("a.png, b.png: At most 4 new images ...")."""
    names: dict[str, list[str]] = {}
    for message in problems:
        name, sep, rest = message.partition(": ")
        names.setdefault(rest if sep else message, []).append(name if sep else "")
    return [(", ".join(n for n in who if n) + ": " + rest) if len(who) > 1 and all(who) else
            (f"{who[0]}: {rest}" if who[0] else rest) for rest, who in names.items()]


def added_notice(added: list[str], problems: list[str]) -> str:
    """The notice under the gallery after an upload: what was added, then each problem (escaped)."""
    text = f"Added {', '.join(added)}." if added else ""
    if problems:
        text = (text + " " if text else "") + " ".join(html.escape(p) for p in problems)
    return text


def plain(text: str) -> str:
    """A message for a toast (which renders HTML): shown as written, never as markup."""
    return html.escape(text, quote=False)


def chats_html(entries: list[dict[str, Any]], limits: dict[str, Any]) -> str:
    """This browser's earlier chats, newest first: thumbnails, title, turns and date, with Rename and Delete
    (links page.js passes on, as for ``turn_tools``); then how long they are kept. Every text escaped."""
    esc = html.escape
    if not limits:
        return "<p class='chat-limits'>Conversations are not saved on this server.</p>"
    rows = []
    for entry in entries:
        row, title = esc(str(entry["id"])), esc(str(entry.get("title") or "Untitled"))
        thumbs = "".join(f"<img src='gradio_api/file={esc(quote(path))}' alt=''>"
                         for path in entry.get("thumbnails", [])[:3])
        when = time.strftime("%d %b %H:%M", time.localtime(float(entry.get("updated") or 0)))
        meta = f"{entry.get('turns', 0)} turn{'' if entry.get('turns') == 1 else 's'} · {when}"
        current = " current" if entry.get("current") else ""
        rows.append(f"<li class='chat-item{current}' data-chat='{row}'>"
                    f"<a href='#llava-open-{row}' class='chat-open' title='Open this conversation'>"
                    f"<span class='chat-thumbs'>{thumbs}</span><span class='chat-text'>"
                    f"<span class='chat-title'>{title}</span><span class='chat-meta'>{esc(meta)}</span></span></a>"
                    f"<a href='#llava-rename-{row}' class='chat-rename' title='Rename' data-title='{title}'>✎</a>"
                    f"<a href='#llava-delete-{row}' class='chat-delete' title='Delete'>✕</a></li>")
    listed = f"<ul class='chat-items'>{''.join(rows)}</ul>" if rows else \
        "<p class='chat-empty'>Your conversations appear here once you ask a question.</p>"
    days = limits.get("days") or 0
    kept = (f"Kept in this browser for {days:g} day{'' if days == 1 else 's'} after their last use"
            if days else "Kept in this browser")
    return listed + f"<p class='chat-limits'>{esc(kept)}; the oldest go first once all of them together pass " \
                    f"{limits.get('max_mb', 0):,.0f} MB.</p>"


def share_text(url: str, expires: float) -> str:
    """What Share made: the read-only link and until when it opens."""
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return (f"Read-only link to the branch shown (anyone with it can read it, until {until}):  \n"
            f"<a href='{html.escape(url)}' target='_blank' rel='noopener noreferrer' class='share-url'>"
            f"{html.escape(url)}</a>")
