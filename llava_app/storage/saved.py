"""Saved conversations: each browser's conversation kept across page reloads, in SQLite plus image files.

The browser keeps a random 256-bit token (``gr.BrowserState``, in its localStorage, so
every tab of that browser shares it and no other browser has it). The server stores
only a hash of the token (and of the signed-in user's name, when login is on), so the
database alone does not let anyone load a conversation. Each saved conversation is one
row under its browser's key (``owner``; a browser has several: New chat keeps the previous
one in its list), the ``ConversationRecord``'s JSON (turns, image numbers and hashes), an
optional title the user gave it, and the images
are PNG files named by content hash, hard-linked from the image store where the file
system allows (no second copy).

Writes are atomic: image files are written to a temporary name and renamed, then the row
is replaced in one SQLite transaction; a crash at any point leaves the last committed
conversation. ``sweep`` (run by housekeeping, never on a user's request) deletes saved
conversations unused for ``retention_s``, and the oldest first when they pass ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.storage.images import ImageStore
from llava_app.storage.records import FORMAT, ConversationRecord

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


THUMBNAILS = 3  # first images shown beside a saved conversation in the list
TITLE_CHARS = 80


def _title(question: str) -> str:
    """A conversation's title from its first question: its first line, cut at a word."""
    line = " ".join(question.split())
    if len(line) <= TITLE_CHARS:
        return line or "New chat"
    return line[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


def new_row_key() -> str:
    """The key of a new saved conversation (random: nothing about its browser can be read from it)."""
    return secrets.token_hex(16)


def new_browser_token() -> str:
    """A fresh unguessable per-browser token (256 random bits)."""
    return secrets.token_urlsafe(32)


def is_browser_token(value: Any) -> bool:
    """True for a token this server could have issued (anything else is replaced, never looked up)."""
    return isinstance(value, str) and bool(_TOKEN.match(value))


def entry_key(token: str, username: str | None = None) -> str:
    """The database key of a browser's saved conversation: a hash, so the database never holds the token itself."""
    return hashlib.sha256(f"llava-app/1\0{username or ''}\0{token}".encode()).hexdigest()


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A row written before the record had one JSON form (no ``format``, ``joined_at`` for ``turn``)."""
    if "format" in data or data.get("version") != 1:
        return data
    images = [{**im, "turn": im.get("joined_at")} for im in data.get("images", []) if isinstance(im, dict)]
    return {**data, "format": FORMAT, "images": images}


# ----- the store ---------------------------------------------------------------------------------
def place_file(source: str, dest: Path) -> None:
    """Link (or copy) ``source`` to ``dest`` under a temporary name, then rename: never half a file.

    The new file's time is now (a link keeps the store file's old time): a sweep's grace runs from
    here until the row that names it is written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.utime(tmp)
    os.replace(tmp, dest)


class SavedConversations:
    """The saved conversations: SQLite rows (one per browser) plus content-addressed image files.

    Args:
        db_path: the SQLite database file.
        files_dir: the folder for the saved conversations' image files.
        retention_s: saved conversations not saved again for this long are deleted.
        max_bytes: the size cap of them all (rows plus image files); the oldest go first.
        sweep_interval_s: ``housekeep`` sweeps at most this often.
    """

    def __init__(self, db_path: str | os.PathLike, files_dir: str | os.PathLike, *,
                 retention_s: float = 7 * 86400, max_bytes: int = 1 << 30, sweep_interval_s: float = 60.0,
                 orphan_grace_s: float = 60.0):
        self.db_path = Path(db_path)
        self.files_dir = Path(files_dir)
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.sweep_interval_s = sweep_interval_s
        self.orphan_grace_s = orphan_grace_s
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time in this process; SQLite guards across processes
        self._last_sweep = 0.0
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS conversations (key TEXT PRIMARY KEY, updated REAL NOT NULL, "
                       "size INTEGER NOT NULL, data TEXT NOT NULL)")
            columns = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
            for column in ("owner", "title"):  # a database of one conversation per browser: its key is its owner
                if column not in columns:
                    with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                        db.execute(f"ALTER TABLE conversations ADD COLUMN {column} TEXT")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            with db:  # one transaction: committed on success, rolled back on any error
                yield db
        finally:
            db.close()

    def secret(self) -> str:
        """A stable secret for the browser-side storage (kept next to the database, created once)."""
        path = self.db_path.with_suffix(".secret")
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        # Written whole under a temporary name, then linked into place unless another app process
        # sharing the data folder was first: every process reads the same secret, never half of one.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return path.read_text().strip()

    def file_for(self, sha256: str) -> Path:
        """Where a saved conversation's image lives."""
        return self.files_dir / sha256[:2] / f"{sha256}.png"

    def _save_file(self, sha256: str, source: str) -> None:
        """Link (or copy) an image in (``place_file``); one already there is touched: its grace starts again."""
        dest = self.file_for(sha256)
        if dest.exists():
            os.utime(dest)
            return
        place_file(source, dest)

    def save(self, key: str, record: ConversationRecord, owner: str | None = None) -> None:
        """Replace the saved conversation ``key`` with ``record`` (image files first, then the row, atomically);
        ``owner`` is the browser's key it is listed under (its title stays).

        No sweep here: that is housekeeping's (``housekeep``), off the user's request path.
        """
        for im in record.images:
            source = record.files.get(im.sha256)
            try:
                if source is None:
                    raise FileNotFoundError(im.sha256)
                self._save_file(im.sha256, source)
            except FileNotFoundError:
                if not self.file_for(im.sha256).exists():
                    log.warning("an image of a conversation is gone from the store; not saved")
        data = json.dumps(record.to_json(), ensure_ascii=False)
        with self._lock, self._db() as db:
            db.execute("INSERT INTO conversations (key, updated, size, data, owner) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET updated = excluded.updated, size = excluded.size, "
                       "data = excluded.data, owner = COALESCE(excluded.owner, owner)",
                       (key, time.time(), len(data.encode()), data, owner))

    def load(self, key: str, store: ImageStore, owner: str | None = None) -> ConversationRecord | None:
        """The record saved under ``key`` with its images linked back into ``store`` (``files``), or None;
        with ``owner``, only a conversation listed under that browser's key."""
        with self._db() as db:
            row = db.execute("SELECT data FROM conversations WHERE key = ? AND (? IS NULL OR COALESCE(owner, key) = ?)",
                             (key, owner, owner)).fetchone()
        if row is None:
            return None
        try:
            record = ConversationRecord.from_json(_upgrade(json.loads(row[0])), Message("record.saved_conversation"))
        except (ValueError, UserError):
            log.warning("a saved conversation could not be read; starting fresh")
            return None
        for im in record.images:
            src = self.file_for(im.sha256)
            if src.exists():
                record.files[im.sha256] = str(store.link_in(im.sha256, src))
        return record

    def delete(self, key: str, owner: str | None = None) -> bool:
        """Remove a saved conversation (its image files go at the next sweep when nothing else uses them);
        with ``owner``, only one of that browser's. True when one was removed."""
        with self._lock, self._db() as db:
            return db.execute("DELETE FROM conversations WHERE key = ? AND (? IS NULL OR COALESCE(owner, key) = ?)",
                              (key, owner, owner)).rowcount > 0

    def listing(self, owner: str) -> list[dict[str, Any]]:
        """A browser's saved conversations, newest first: id, title, date, turns and first images' files."""
        with self._db() as db:
            rows = db.execute("SELECT key, updated, title, data FROM conversations WHERE COALESCE(owner, key) = ? "
                              "ORDER BY updated DESC", (owner,)).fetchall()
        return [summary for key, updated, title, data in rows if (summary := self._summary(key, updated, title, data))]

    def _summary(self, key: str, updated: float, title: str | None, data: str) -> dict[str, Any] | None:
        try:
            record = ConversationRecord.from_json(_upgrade(json.loads(data)), Message("record.saved_conversation"))
        except (ValueError, UserError):
            return None
        first = record.turns[0].user if record.turns else ""
        shown = [im for im in record.images if im.turn >= 0][:THUMBNAILS]
        return {"id": key, "title": title or _title(first), "updated": updated, "turns": len(record.turns),
                "images": len(record.images),
                "thumbnails": [str(self.file_for(im.sha256)) for im in shown if self.file_for(im.sha256).exists()]}

    def rename(self, key: str, owner: str, title: str) -> bool:
        """Give one of a browser's saved conversations a title (empty: back to its first question)."""
        with self._lock, self._db() as db:
            return db.execute("UPDATE conversations SET title = ? WHERE key = ? AND COALESCE(owner, key) = ?",
                              (title.strip()[:TITLE_CHARS] or None, key, owner)).rowcount > 0

    def keys(self) -> list[str]:
        """Every saved conversation's key, newest first."""
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT key FROM conversations ORDER BY updated DESC")]

    def size_bytes(self) -> int:
        """Rows plus image files, in bytes."""
        with self._db() as db:
            rows = db.execute("SELECT COALESCE(SUM(size), 0) FROM conversations").fetchone()[0]
        return rows + sum(p.stat().st_size for p in self.files_dir.glob("*/*.png"))

    def housekeep(self) -> None:
        """Sweep when ``sweep_interval_s`` has passed since the last sweep (housekeeping calls this often)."""
        if time.monotonic() - self._last_sweep >= self.sweep_interval_s:
            self.sweep()

    def sweep(self) -> None:
        """Apply the retention time and the size cap, then delete image files no saved conversation uses."""
        self._last_sweep = time.monotonic()
        with self._lock:
            with self._db() as db:
                db.execute("DELETE FROM conversations WHERE updated < ?", (time.time() - self.retention_s,))
                rows = db.execute("SELECT key, size, data FROM conversations ORDER BY updated DESC").fetchall()
            used = {k: {im["sha256"] for im in json.loads(d)["images"]} for k, _, d in rows}
            file_size = {p.stem: p.stat().st_size for p in self.files_dir.glob("*/*.png")}
            refs: Counter[str] = Counter(h for hashes in used.values() for h in hashes)
            total = sum(size for _, size, _ in rows) + sum(file_size.get(h, 0) for h in refs)
            evict: list[str] = []
            for key, size, _ in reversed(rows[1:]):  # oldest first; the newest always stays
                if total <= self.max_bytes:
                    break
                evict.append(key)
                total -= size
                for h in used[key]:
                    refs[h] -= 1
                    if refs[h] == 0:
                        del refs[h]
                        total -= file_size.get(h, 0)
            if evict:
                with self._db() as db:
                    db.executemany("DELETE FROM conversations WHERE key = ?", [(k,) for k in evict])
                log.info("saved conversations over their size cap: removed the %d oldest", len(evict))
            keep = set(refs)
        cutoff = time.time() - self.orphan_grace_s  # a save in progress links files before its row commits
        for path in list(self.files_dir.glob("*/*.png")) + list(self.files_dir.glob("*/*.tmp")):
            sha = path.name.split(".")[0]
            try:
                if sha not in keep or path.suffix == ".tmp":
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
            except FileNotFoundError:
                pass
