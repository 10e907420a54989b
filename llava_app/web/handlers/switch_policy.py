"""Who may switch the model: the operator's policy (``--model-switching``, ``--admins``); no gradio here.

Switching the model changes it for every user of the server, so by default only admins
named by the operator may (and, without a login, nobody). The page offers the picker only
to those ``allows`` lets, and the ``switch_model`` event checks again on the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava_app.config import Config
from llava_app.messages import Message

REFUSED = Message("switch.refused")


@dataclass(frozen=True)
class SwitchPolicy:
    """``mode`` is off, admins or everyone; ``admins`` the user names allowed under admins."""

    mode: str = "admins"
    admins: frozenset[str] = frozenset()
    login: bool = False  # users sign in (--auth/--auth-file); without it nobody has a name

    @classmethod
    def from_config(cls, config: Config) -> SwitchPolicy:
        """The policy the operator configured."""
        names = frozenset(n.strip() for n in config.admins.split(",") if n.strip())
        return cls(config.model_switching, names, bool(config.auth or config.auth_file))

    @property
    def offered(self) -> bool:
        """True when someone may ever switch (the page then builds the picker and the event)."""
        return self.mode == "everyone" or (self.mode == "admins" and self.login and bool(self.admins))

    @property
    def for_everyone(self) -> bool:
        """True when every visitor gets the picker (it is built visible)."""
        return self.mode == "everyone"

    def allows(self, username: str | None) -> bool:
        """May the user signed in as ``username`` (None: no login) switch the model?"""
        if self.mode == "everyone":
            return True
        return self.mode == "admins" and self.login and username is not None and username in self.admins
