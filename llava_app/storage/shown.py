"""Pictures as the page is given them: under an unguessable folder per conversation, never the store's own files.

The store names a file by its content hash (``images/<xx>/<sha256>.png``), and so does the
saved conversations' copy: served as they are, anyone who knows (or guesses, from a picture of
their own) a hash could fetch another user's picture, or learn that she has it. So the page
never gets those paths. Each conversation has a random key (``Conversation.view_key``, 144
bits), and the page shows ``<root>/<key>/<file name>``: a hard link to the stored file (a copy
where the two folders are on different disks), made the first time the page needs it. Only
``<root>`` is served; the store, the saved copies and the instances' leases are not.

A folder unused (no picture shown from it) for ``max_age_s`` is removed by ``sweep``; a page
still open on it gets its links again the next time it is drawn (``path`` makes what is
missing). Any number of processes may share the root: each folder belongs to one conversation,
and a sweep goes by the folders' times only.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

#: a key as ``Conversation`` makes them (``secrets.token_urlsafe``); anything else never names a folder
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
#: a folder's time is refreshed at most this often while its pictures are shown (a stat, not a write, per view)
TOUCH_EVERY_S = 60.0


class ShownPictures:
    """The served folder: ``path`` gives the page's path of a stored picture, ``sweep`` removes unused folders."""

    def __init__(self, root: str | os.PathLike, clock=time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def path(self, key: str, source: str | os.PathLike) -> str:
        """The path the page is given for the file ``source`` of the conversation with ``key``."""
        if not _KEY.match(key or ""):
            raise ValueError("not a conversation's view key")
        source = Path(source)
        folder = self.root / key
        target = folder / source.name
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                _link(source, target)
            except FileNotFoundError:  # the picture is gone (an expired session): the page shows it missing
                pass
        self._touch(key, folder)
        return str(target)

    def _touch(self, key: str, folder: Path) -> None:
        now = self._clock()
        with self._lock:
            if now - self._touched.get(key, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
                return
            self._touched[key] = now
            if len(self._touched) > 4096:  # forget keys not touched lately (their folders go by age)
                self._touched = {k: t for k, t in self._touched.items() if now - t < TOUCH_EVERY_S}
        try:
            os.utime(folder, (now, now))
        except FileNotFoundError:
            pass

    def sweep(self, max_age_s: float) -> int:
        """Remove the folders no picture was shown from for ``max_age_s``; returns how many went."""
        now, removed = self._clock(), 0
        for folder in self.root.iterdir():
            try:
                if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:  # another process swept it meanwhile
                continue
        return removed


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content: a hard link (no bytes copied), or a copy across disks."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)  # whole or not at all, also with two processes at it
