"""User-facing errors: raised anywhere, caught once (UI/API), shown as a message, never a traceback."""

from __future__ import annotations

from typing import Any

from llava_app.messages import CATALOGUE, Message


class UserError(Exception):
    """Something the user (or operator) can fix.

    Raised with a message key and its parameters (``UserError("chat.type_first")``), or with a ``Message``;
    the page shows it in the reader's language, ``str()`` is the English (logs, the API). Plain text that is
    not a key (another server's own words) is shown as it is.
    """

    def __init__(self, message: Message | str = "", /, **params: Any):
        if isinstance(message, str) and (params or message in CATALOGUE):
            message = Message(message, **params)
        super().__init__(message)

    @property
    def message(self) -> Message | str:
        """What to show: a ``Message`` to render in the reader's language, or plain text."""
        return self.args[0] if self.args else ""


class ModelNotFoundError(UserError):
    """A model id or folder that cannot be loaded (offline, not cached, wrong id)."""


class ConfigError(UserError):
    """A setting that cannot work here (a device that is not there, 4-bit without CUDA, an unknown backend)."""


class MissingDependency(UserError):
    """A package the chosen setting needs is not installed; the message says what to install."""


class EngineError(Exception):
    """The model failed on a request (not the user's doing); the message says so in one line."""
