"""Optional login for team demos: users from --auth, a file, or the environment (via the config)."""

from __future__ import annotations

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
            raise UserError(f"{where}: expected user:password")  # never echo the line: it may hold a password
        users.append((user.strip(), password.strip()))
    return users


def load_users(auth: str = "", auth_file: str = "") -> list[tuple[str, str]] | None:
    """All users from the ``auth`` setting and the ``auth_file``; None when login is off."""
    users = parse_users(auth) if auth.strip() else []
    if auth_file:
        try:
            users += parse_users(Path(auth_file).read_text(encoding="utf-8"), source=auth_file)
        except OSError as exc:
            raise UserError(f"cannot read --auth-file {auth_file}: {exc.strerror}") from None
        if not users:
            raise UserError(f"--auth-file {auth_file} has no user:password lines")
    names = [u for u, _ in users]
    if len(set(names)) != len(names):
        raise UserError("the same user name is given twice in --auth / --auth-file")
    return users or None
