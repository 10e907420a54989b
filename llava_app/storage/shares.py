"""Shared snapshots: a read-only copy of a conversation at an unguessable URL, until it expires or is revoked.

A snapshot is the ``ConversationRecord``'s JSON (the branch shown, nothing else) plus copies of
its images, content-addressed like the saved conversations' and hard-linked where the file system
allows. The URL's token is 256 random bits; the database keeps only its hash, so the database
alone opens no snapshot. Each row names its owner (the browser's key), who alone may revoke it.
Expired rows, and image files no snapshot uses, are deleted by ``sweep`` (housekeeping).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.storage.records import ConversationRecord
from llava_app.storage.saved import place_file

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def _hash(token: str) -> str:
    return hashlib.sha256(f"llava-app/share\0{token}".encode()).hexdigest()


class Shares:
    """The shared snapshots: SQLite rows plus image files.

    Args:
        db_path: the SQLite database file.
        files_dir: the folder for the snapshots' image files.
        ttl_s: how long a snapshot stays readable.
    """

    def __init__(self, db_path: str | os.PathLike, files_dir: str | os.PathLike, ttl_s: float = 7 * 86400):
        self.db_path, self.files_dir, self.ttl_s = Path(db_path), Path(files_dir), ttl_s
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS shares (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                       "created REAL NOT NULL, expires REAL NOT NULL, data TEXT NOT NULL)")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def file_for(self, sha256: str) -> Path:
        """Where a snapshot's image lives."""
        return self.files_dir / sha256[:2] / f"{sha256}.png"

    def create(self, record: ConversationRecord, owner: str) -> tuple[str, float]:
        """Keep a snapshot of ``record`` (its ``files`` are copied in); returns ``(token, expires)``."""
        for im in record.images:
            source = record.files.get(im.sha256)
            if source is None:
                raise UserError("image.not_shareable", label=im.label)
            dest = self.file_for(im.sha256)
            if not dest.exists():
                place_file(source, dest)  # a sweep spares files this young: the row is written just after
        token, now = secrets.token_urlsafe(32), time.time()
        with self._lock, self._db() as db:
            db.execute("INSERT INTO shares (key, owner, created, expires, data) VALUES (?, ?, ?, ?, ?)",
                       (_hash(token), owner, now, now + self.ttl_s, json.dumps(record.to_json(), ensure_ascii=False)))
        return token, now + self.ttl_s

    def get(self, token: str) -> tuple[ConversationRecord, float] | None:
        """The snapshot and its expiry time, with its image files in ``files``; None when unknown, expired or
        revoked."""
        if not isinstance(token, str) or not _TOKEN.match(token):
            return None
        with self._db() as db:
            row = db.execute("SELECT data, expires FROM shares WHERE key = ? AND expires > ?",
                             (_hash(token), time.time())).fetchone()
        if row is None:
            return None
        record = ConversationRecord.from_json(json.loads(row[0]), Message("record.shared_conversation"))
        record.files = {im.sha256: str(self.file_for(im.sha256)) for im in record.images}
        return record, row[1]

    def revoke(self, token: str, owner: str) -> bool:
        """Delete the owner's snapshot at ``token`` now; False when it is not theirs (or gone already)."""
        if not isinstance(token, str) or not _TOKEN.match(token):
            return False
        with self._lock, self._db() as db:
            return db.execute("DELETE FROM shares WHERE key = ? AND owner = ?", (_hash(token), owner)).rowcount > 0

    def sweep(self, grace_s: float = 60.0) -> None:
        """Delete expired snapshots, then image files no snapshot uses (older than ``grace_s``)."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM shares WHERE expires <= ?", (time.time(),))
            used = {im["sha256"] for (data,) in db.execute("SELECT data FROM shares")
                    for im in json.loads(data).get("images", [])}
        cutoff = time.time() - grace_s
        for path in self.files_dir.glob("*/*.png"):
            with contextlib.suppress(FileNotFoundError):
                if path.stem not in used and path.stat().st_mtime < cutoff:
                    path.unlink()
