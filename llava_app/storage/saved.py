"""Conversations kept across page reloads: SQLite rows plus image files, one entry per browser.

The browser keeps a random 256-bit token (``gr.BrowserState``, in its localStorage, so
every tab of that browser shares it and no other browser has it). The server stores
only a hash of the token (and of the signed-in user's name, when login is on), so the
database alone does not let anyone load a conversation. Each entry is one row of JSON
(turns, image numbers and hashes) and the images are PNG files named by content hash,
hard-linked from the image store where the file system allows (no second copy).

Writes are atomic: image files are written to a temporary name and renamed, then the row
is replaced in one SQLite transaction; a crash at any point leaves the last committed
conversation. Entries unused for ``retention_s`` are deleted, and the oldest go first
when the whole archive passes ``max_bytes``.
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
from pathlib import Path
from typing import Any, Iterator

from llava_app.chat.conversation import Conversation, ImageRef, PromptInfo, Turn
from llava_app.storage.images import ImageStore

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


def new_browser_token() -> str:
    """A fresh unguessable per-browser token (256 random bits)."""
    return secrets.token_urlsafe(32)


def is_browser_token(value: Any) -> bool:
    """True for a token this server could have issued (anything else is replaced, never looked up)."""
    return isinstance(value, str) and bool(_TOKEN.match(value))


def entry_key(token: str, username: str | None = None) -> str:
    """The database key of a browser's entry: a hash, so the database never holds the token itself."""
    return hashlib.sha256(f"llava-app/1\0{username or ''}\0{token}".encode()).hexdigest()


# ----- (de)serialisation -------------------------------------------------------------------------
def to_record(conv: Conversation) -> dict[str, Any]:
    """The conversation as plain JSON data (paths and the live id are not kept)."""
    info = conv.last_prompt
    return {
        "version": FORMAT_VERSION,
        "next_number": conv.next_number,
        "images": [{"number": im.number, "sha256": im.sha256, "width": im.width, "height": im.height,
                    "joined_at": im.joined_at, "name": im.name, "video": im.video} for im in conv.images],
        "turns": [{"user": t.user, "assistant": t.assistant, "stopped": t.stopped} for t in conv.turns],
        "last_prompt": None if info is None else {"text": info.text, "n_images": info.n_images,
                                                  "n_tokens": info.n_tokens, "image_labels": info.image_labels},
    }


def from_record(record: dict[str, Any], image_path: dict[str, str]) -> Conversation:
    """A new Conversation (fresh id) from a record; images whose file is missing are left out."""
    conv = Conversation()
    conv.next_number = int(record["next_number"])
    conv.turns = [Turn(user=t["user"], assistant=t["assistant"], stopped=bool(t["stopped"])) for t in record["turns"]]
    for im in record["images"]:
        path = image_path.get(im["sha256"])
        if path is None:
            log.warning("an archived image file is missing; the conversation is restored without it")
            continue
        conv.images.append(ImageRef(number=int(im["number"]), sha256=im["sha256"], path=path, width=int(im["width"]),
                                    height=int(im["height"]), joined_at=int(im["joined_at"]), name=im.get("name", ""),
                                    video=im.get("video", "")))
    lp = record.get("last_prompt")
    if lp:
        conv.last_prompt = PromptInfo(text=lp["text"], n_images=lp["n_images"], n_tokens=lp["n_tokens"],
                                      image_labels=list(lp["image_labels"]))
    return conv


# ----- the store ---------------------------------------------------------------------------------
class ConversationArchive:
    """SQLite rows plus content-addressed image files.

    Args:
        db_path: the SQLite database file.
        files_dir: the folder for archived image files.
        retention_s: entries not saved for this long are deleted.
        max_bytes: the archive's size cap (rows plus image files); the oldest entries go first.
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
        value = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    def file_for(self, sha256: str) -> Path:
        """Where an archived image lives."""
        return self.files_dir / sha256[:2] / f"{sha256}.png"

    def _archive_file(self, sha256: str, source: str) -> None:
        """Link (or copy) an image into the archive under a temporary name, then rename: never half a file."""
        dest = self.file_for(sha256)
        if dest.exists():
            os.utime(dest)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def save(self, key: str, conv: Conversation) -> None:
        """Replace the entry ``key`` with ``conv`` (images first, then the row, atomically)."""
        for im in conv.images:
            try:
                self._archive_file(im.sha256, im.path)
            except FileNotFoundError:
                if not self.file_for(im.sha256).exists():
                    log.warning("an image of a conversation is gone from the store; not archived")
        data = json.dumps(to_record(conv), ensure_ascii=False)
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO conversations (key, updated, size, data) VALUES (?, ?, ?, ?)",
                       (key, time.time(), len(data.encode()), data))
        if time.monotonic() - self._last_sweep >= self.sweep_interval_s:
            self.sweep()

    def load(self, key: str, store: ImageStore) -> Conversation | None:
        """The conversation saved under ``key`` with its images back in ``store``, or None."""
        with self._db() as db:
            row = db.execute("SELECT data FROM conversations WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            record = json.loads(row[0])
            if record.get("version") != FORMAT_VERSION:
                return None
            paths = {}
            for im in record["images"]:
                src = self.file_for(im["sha256"])
                if src.exists():
                    paths[im["sha256"]] = str(store.link_in(im["sha256"], src))
            return from_record(record, paths)
        except (ValueError, KeyError, TypeError):
            log.warning("an archived conversation could not be read; starting fresh")
            return None

    def delete(self, key: str) -> None:
        """Remove an entry (its image files go at the next sweep when nothing else uses them)."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM conversations WHERE key = ?", (key,))

    def keys(self) -> list[str]:
        """Every entry's key, newest first."""
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT key FROM conversations ORDER BY updated DESC")]

    def size_bytes(self) -> int:
        """Rows plus image files, in bytes."""
        with self._db() as db:
            rows = db.execute("SELECT COALESCE(SUM(size), 0) FROM conversations").fetchone()[0]
        return rows + sum(p.stat().st_size for p in self.files_dir.glob("*/*.png"))

    def sweep(self) -> None:
        """Apply the retention time and the size cap, then delete image files no entry uses."""
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
            for key, size, _ in reversed(rows[1:]):  # oldest first; the newest entry always stays
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
                log.info("archive over its size cap: removed %d oldest conversation(s)", len(evict))
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


class BrowserHistory:
    """Ties live conversations to their browser's archive entry; a no-op without an archive."""

    def __init__(self, archive: ConversationArchive | None, store: ImageStore):
        self.archive = archive
        self.store = store
        self._owner: dict[str, str] = {}  # live conversation id -> entry key
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when conversations are kept across reloads."""
        return self.archive is not None

    def secret(self) -> str | None:
        """The secret that signs the browser-side key (None with saving off)."""
        return self.archive.secret() if self.archive is not None else None

    def open(self, token: Any, username: str | None = None) -> tuple[str, Conversation | None, str | None]:
        """On page load: ``(token, restored conversation or None, question to put back in the box)``.

        A missing or malformed token is replaced by a new one (and nothing is loaded).
        """
        if self.archive is None:
            return "", None, None
        if not is_browser_token(token):
            return new_browser_token(), None, None
        key = entry_key(token, username)
        conv = self.archive.load(key, self.store)
        if conv is None:
            return token, None, None
        pending = None
        if conv.turns and conv.turns[-1].assistant is None:  # saved while its answer was being written
            pending = conv.retract()
        self.bind(conv, token, username)
        return token, conv, pending

    def bind(self, conv: Conversation, token: str, username: str | None = None) -> None:
        """Save ``conv`` under this browser's entry from now on."""
        if self.archive is not None and is_browser_token(token):
            with self._lock:
                self._owner[conv.id] = entry_key(token, username)

    def rebind(self, old: Conversation, new: Conversation) -> None:
        """A new chat replaces the browser's conversation."""
        with self._lock:
            key = self._owner.pop(old.id, None)
            if key is not None:
                self._owner[new.id] = key

    def release(self, conv_id: str) -> None:
        """The conversation ended on the server; its entry stays in the archive."""
        with self._lock:
            self._owner.pop(conv_id, None)

    def key_of(self, conv: Conversation) -> str | None:
        """The entry a conversation saves to, if any."""
        with self._lock:
            return self._owner.get(conv.id)

    def save(self, conv: Conversation, key: str | None = None) -> None:
        """Save ``conv`` to its browser's entry (no-op when it has none)."""
        key = key or self.key_of(conv)
        if self.archive is None or key is None:
            return
        try:
            self.archive.save(key, conv)
        except (OSError, sqlite3.Error):
            log.exception("saving a conversation failed; the live conversation is unaffected")

    def saving(self, chunks: Iterator[str], conv: Conversation) -> Iterator[str]:
        """Pass a stream through and save the conversation when it ends, however it ends.

        The entry is looked up now, so a tab closed mid-answer still saves the stopped answer.
        """
        key = self.key_of(conv)
        try:
            yield from chunks
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # lets stream_answer record the answer before it is saved
            self.save(conv, key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._owner)
