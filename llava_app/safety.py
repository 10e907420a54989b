"""Text that users and the model write, made inert before the page renders it as Markdown.

The chat renders Markdown, and Markdown passes raw HTML through. The page's sanitiser
removes scripts and event handlers, but an ``<img src=...>`` or a Markdown image
``![](https://...)`` would still make every viewer's browser fetch an outside resource
(a tracking pixel, or a request the model was tricked into writing). So outside code,
every ``<`` becomes ``&lt;`` (shown as ``<``, never parsed as a tag) and every image
opener ``![`` loses its meaning (shown as ``![``). Code spans and fenced blocks are left
alone: Markdown shows their content literally already.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)
_BACKTICKS = re.compile(r"`+")


def inert_markdown(text: str) -> str:
    """Markdown with raw HTML and images neutralised (links and formatting are kept)."""
    if not text:
        return text
    out: list[str] = []
    pos = 0
    while pos < len(text):
        fence = _FENCE.search(text, pos)
        if fence is None:
            out.append(_inline(text[pos:]))
            break
        out.append(_inline(text[pos:fence.start()]))
        marker = fence.group(1)
        closing = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", re.MULTILINE)
        line_end = text.find("\n", fence.end())
        body_start = len(text) if line_end < 0 else line_end + 1
        close = closing.search(text, body_start)
        end = len(text) if close is None else close.end()  # an unclosed fence runs to the end
        out.append(text[fence.start():end])
        pos = end
    return "".join(out)


def _inline(text: str) -> str:
    """Neutralise text outside fenced blocks, leaving inline code spans as they are."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        tick = _next_backticks(text, pos)
        if tick is None:
            out.append(_plain(text[pos:]))
            break
        # A code span runs to the next backtick string of the same length (CommonMark).
        run = tick.group(0)
        close = next((m for m in _BACKTICKS.finditer(text, tick.end()) if len(m.group(0)) == len(run)), None)
        if close is None:  # no closing run: the backticks are literal text
            out.append(_plain(text[pos:tick.end()]))
            pos = tick.end()
            continue
        out.append(_plain(text[pos:tick.start()]))
        out.append(text[tick.start():close.end()])
        pos = close.end()
    return "".join(out)


def _next_backticks(text: str, pos: int):
    """The next backtick run that is not backslash-escaped."""
    for m in _BACKTICKS.finditer(text, pos):
        if m.start() > 0 and text[m.start() - 1] == "\\" and _escaped(text, m.start() - 1):
            if len(m.group(0)) == 1:
                continue
        return m
    return None


def _escaped(text: str, backslash_at: int) -> bool:
    """True when the backslash at ``backslash_at`` is itself not escaped."""
    n = 0
    i = backslash_at
    while i >= 0 and text[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def _plain(text: str) -> str:
    text = text.replace("<", "&lt;")
    return text.replace("![", "!\\[")


def inert_text(text: str) -> str:
    """Text for places that render HTML (toasts, notices): shown literally, never parsed."""
    return html.escape(text, quote=False)
