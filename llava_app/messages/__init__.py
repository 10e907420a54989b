"""Messages a person reads, by key: English and Simplified Chinese, rendered where they are shown.

Code that has something to tell a person makes a ``Message`` (a key of the catalogue and its
parameters) or raises a ``UserError`` with one; the page renders it in the reader's language
(``localize``), while ``str()`` is the English text, for logs and the API. Parameters are
``{name}``-style fields with Python's format specs, plus three of our own for text that goes
inside another message (``cap``: a capital first letter; ``sentence``: also ends with a full
stop; ``clause``: no full stop at the end) and one for numbers (``ord``: 1st, 2nd, 3rd in
English). A parameter that is itself a ``Message`` is rendered in the same language; plain
text (file names, labels, what people and the model wrote) is never translated.

A leaf module: every layer may import it, and it imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llava_app.messages import chat, engine, storage, web

#: key -> (English, Simplified Chinese)
CATALOGUE: dict[str, tuple[str, str]] = {**web.TEXTS, **chat.TEXTS, **storage.TEXTS, **engine.TEXTS}
LANGUAGES = ("en", "zh-CN")
_CJK_END = ("。", "！", "？", "：", "）", "」", "”")


def language(lang: str | None) -> int:
    """The column of ``lang`` in the catalogue: Chinese for ``zh``, ``zh-CN`` and the like, else English."""
    return 1 if (lang or "").lower().startswith("zh") else 0


class _Text(str):
    """A rendered parameter: a string that also knows the specs ``cap``, ``sentence`` and ``clause``."""

    lang = 0

    def __format__(self, spec: str) -> str:
        text = str(self)
        if spec in ("cap", "sentence"):
            text = text[:1].upper() + text[1:]
        if spec == "sentence" and not text.endswith((".", "?", "!", *_CJK_END)):
            text += "。" if self.lang else "."
        if spec == "clause":
            text = text.rstrip(".。")
        return text if spec in ("cap", "sentence", "clause") else format(text, spec)


class _Number(int):
    """A whole-number parameter that also knows ``ord`` (English ordinals: 1st, 2nd, 3rd, 11th)."""

    def __format__(self, spec: str) -> str:
        if spec == "ord":
            n = int(self)
            suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
            return f"{n}{suffix}"
        return format(int(self), spec)


def _param(value: Any, lang: str) -> Any:
    if isinstance(value, Message):
        value = value.render(lang)
    if isinstance(value, str):
        text = _Text(value)
        text.lang = language(lang)
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return _Number(value)
    return value


class Message:
    """A key of the catalogue and its parameters; ``render(lang)`` is its text, ``str()`` the English."""

    __slots__ = ("key", "params")

    def __init__(self, key: str, /, **params: Any):
        if key not in CATALOGUE:
            raise KeyError(f"no message {key!r} in the catalogue (llava_app/messages)")
        self.key, self.params = key, params

    def render(self, lang: str | None = "en") -> str:
        """The text in ``lang`` (``zh-CN``; anything else: English), parameters filled in."""
        template = CATALOGUE[self.key][language(lang)] or CATALOGUE[self.key][0]
        return template.format(**{name: _param(value, lang) for name, value in self.params.items()})

    def __str__(self) -> str:
        return self.render("en")

    def __repr__(self) -> str:
        return f"Message({self.key!r}, {', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def _identity(self) -> tuple:
        return (type(self), self.key, tuple(sorted((k, repr(v)) for k, v in self.params.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


class Joined(Message):
    """Several messages (or plain texts) shown as one: sentences one after another."""

    __slots__ = ("parts",)

    def __init__(self, parts: Iterable[Message | str]):
        self.key, self.params, self.parts = "", {}, tuple(p for p in parts if p)

    def render(self, lang: str | None = "en") -> str:
        out = ""
        for part in self.parts:
            piece = localize(part, lang)
            out += (" " if out and not (language(lang) and out.endswith(_CJK_END)) else "") + piece
        return out

    def __repr__(self) -> str:
        return f"Joined({list(self.parts)!r})"

    def _identity(self) -> tuple:
        return (type(self), tuple(p._identity() if isinstance(p, Message) else p for p in self.parts))

    def __bool__(self) -> bool:
        return bool(self.parts)


def localize(message: Message | str | None, lang: str | None) -> str:
    """``message`` in ``lang``: a ``Message`` rendered, a plain string as it is (people's and the model's words,
    text that is already rendered)."""
    if isinstance(message, Message):
        return message.render(lang)
    return "" if message is None else message


def text(key: str, lang: str | None = "en", /, **params: Any) -> str:
    """The message ``key`` rendered in ``lang`` at once (for text that is built where it is shown)."""
    return Message(key, **params).render(lang)
