"""Optional login for team demos: users from --auth, a file, or the environment (via the config).

Gradio guards its own routes with that login (a cookie set by its /login form). The routes
this app adds (``/v1``) are guarded by ``APIAccess``: the API key as a bearer token, or the
same users as HTTP Basic, for API clients that have no cookie. The cookie itself is not
accepted there: Gradio sets it ``SameSite=None``, so another site could make a logged-in
browser post to ``/v1``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

from llava_app.errors import UserError


def parse_users(text: str, source: str = "--auth") -> list[tuple[str, str]]:
    """``user:password`` pairs separated by commas or newlines; blank lines and ``#`` comments are skipped.

    The password is everything after the first colon (surrounding blanks dropped), so it may
    contain colons; commas only in a file, where each line is one user.
    """
    users: list[tuple[str, str]] = []
    for n, raw in enumerate(text.replace(",", "\n").splitlines() if source == "--auth" else text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password.strip():
            where = f"{source} line {n}" if source != "--auth" else source
            raise UserError("auth.bad_line", where=where)  # never echo the line: it may hold a password
        users.append((user.strip(), password.strip()))
    return users


def load_users(auth: str = "", auth_file: str = "") -> list[tuple[str, str]] | None:
    """All users from the ``auth`` setting and the ``auth_file``; None when login is off."""
    users = parse_users(auth) if auth.strip() else []
    if auth_file:
        try:
            users += parse_users(Path(auth_file).read_text(encoding="utf-8"), source=auth_file)
        except OSError as exc:
            raise UserError("auth.unreadable", path=auth_file, reason=exc.strerror) from None
        if not users:
            raise UserError("auth.empty", path=auth_file)
    names = [u for u, _ in users]
    if len(set(names)) != len(names):
        raise UserError("auth.twice")
    return users or None


@dataclass(frozen=True)
class APIAccess:
    """Who may call the routes the app adds: the bearer ``key``, any of ``users`` (HTTP Basic); with neither, anyone."""

    key: str = ""
    users: tuple[tuple[str, str], ...] = ()

    @property
    def open(self) -> bool:
        """No credentials asked."""
        return not self.key and not self.users

    def allows(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header value lets the request in (compared in constant time)."""
        if self.open:
            return True
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and self.key:
            return hmac.compare_digest(token.encode(), self.key.encode())
        if scheme.lower() == "basic" and self.users:
            user, password = _basic_credentials(token)
            found = False
            for name, secret in self.users:  # every user is compared: the time says nothing about which matched
                found |= hmac.compare_digest(user.encode(), name.encode()) & hmac.compare_digest(
                    password.encode(), secret.encode())
            return found
        return False

    def refusal(self) -> str:
        """What a refused client must send."""
        ways = []
        if self.key:
            ways.append("the API key as 'Authorization: Bearer <key>'")
        if self.users:
            ways.append("a user name and password of this demo's login as HTTP Basic auth "
                        "('Authorization: Basic <base64 of user:password>')")
        return "Missing or wrong credentials: send " + " or ".join(ways) + "."

    def challenge(self) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a 401."""
        return {"WWW-Authenticate": 'Basic realm="llava-app", charset="UTF-8"' if self.users else "Bearer"}

    def describe(self, login: bool) -> str:
        """For the start-up log (``login``: the page asks for one)."""
        if self.open:
            return "open to anyone (--openai-api-open)" if login else "open to anyone (no --openai-api-key)"
        ways = (["the API key"] if self.key else []) + (["the login's users (HTTP Basic)"] if self.users else [])
        return "for " + " or ".join(ways)


def _basic_credentials(token: str) -> tuple[str, str]:
    """``user``, ``password`` from an HTTP Basic token (RFC 7617, UTF-8); empty strings when unreadable."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "", ""
    user, sep, password = decoded.partition(":")
    return (user.strip(), password) if sep else ("", "")
