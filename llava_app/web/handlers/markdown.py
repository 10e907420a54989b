"""How chat text is shown in the page: as the words that were written, never as live HTML.

Questions and answers are shown as Markdown. Two things in them must not act in the
reader's browser: raw HTML (a question like ``<img src=x onerror=...>`` is shown as
typed, not rendered) and Markdown images (an answer with ``![x](http://host/y.png)``
would make the page fetch from an outside address, which leaks that the page was
viewed). HTML is escaped and images become plain links, everywhere except inside code,
where Markdown already shows text as is.
"""

from __future__ import annotations

import re

# Code that Markdown shows literally: fenced blocks (an unclosed fence, as in an answer
# still streaming, runs to the end) and inline spans.
_CODE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.S)
# "![alt](...)" or "![alt][ref]": the image syntax, whose "!" makes it load.
_IMAGE = re.compile(r"!\[(?=[^\]\n]*\]\s?[(\[])")


# "<" that could open a tag or comment; "x < y" and "a<3" stay as they are.
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")


def _outside_code(text: str) -> str:
    return _IMAGE.sub("[image: ", _TAG_OPEN.sub("&lt;", text))


def chat_markdown(text: str) -> str:
    """``text`` as Markdown that renders no HTML and loads no image; code is left as written."""
    parts = _CODE.split(text)
    # split() with one group alternates: outside, code, outside, code, ...
    return "".join(part if i % 2 else _outside_code(part) for i, part in enumerate(parts))
