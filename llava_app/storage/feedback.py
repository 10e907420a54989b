"""Like/dislike on answers, appended with the conversation's record to a local JSONL file (off by default)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llava_app.storage.records import ConversationRecord

log = logging.getLogger(__name__)


class FeedbackLog:
    """Appends one JSON line per rating: the rating, then the conversation's record. Images only when asked.

    With images on, each image is copied once (named by its content hash) into
    ``<file stem>_images/`` next to the file, and the record's images name the copies.
    """

    def __init__(self, path: str | os.PathLike, with_images: bool = False):
        self.path = Path(path)
        self.with_images = with_images
        self.image_dir = self.path.with_name(self.path.stem + "_images")
        self._lock = threading.Lock()  # lines from concurrent sessions never interleave

    def record(self, conversation: ConversationRecord, turn_index: int, liked: Any) -> dict[str, Any]:
        """Append the rating of turn ``turn_index``'s answer with the conversation; returns the line's data.

        The line is the record's JSON (model, system prompt, turns, images) with ``time``,
        ``turn``, ``liked`` and ``answer`` added.
        """
        turns = conversation.turns
        record = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "turn": turn_index,
            "liked": liked,
            "answer": turns[turn_index].assistant if 0 <= turn_index < len(turns) else None,
            **conversation.to_json(),
        }
        if self.with_images:
            for entry, im in zip(record["images"], conversation.images, strict=False):
                source = conversation.files.get(im.sha256)
                if source is not None:
                    entry["file"] = self._copy_image(source, im.sha256)
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        return record

    def _copy_image(self, source: str, sha256: str) -> str:
        target = self.image_dir / f"{sha256}.png"
        if not target.exists():
            self.image_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return os.path.relpath(target, self.path.parent)
