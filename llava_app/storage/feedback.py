"""Like/dislike on answers, appended with the conversation to a local JSONL file (off by default)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llava_app.chat.conversation import Conversation

log = logging.getLogger(__name__)


class FeedbackLog:
    """Appends one JSON line per rating. Images only when the operator asked for them.

    With images on, each image is copied once (named by its content hash) into
    ``<file stem>_images/`` next to the file, and the record names the copies.
    """

    def __init__(self, path: str | os.PathLike, with_images: bool = False):
        self.path = Path(path)
        self.with_images = with_images
        self.image_dir = self.path.with_name(self.path.stem + "_images")
        self._lock = threading.Lock()  # lines from concurrent sessions never interleave

    def record(self, conv: Conversation, turn_index: int, liked: Any, *, model: str = "",
               system_prompt: str = "") -> dict[str, Any]:
        """Append the rating of turn ``turn_index``'s answer with the conversation; returns the record."""
        images = []
        for im in conv.images:
            entry = {"label": im.label, "name": im.name, "width": im.width, "height": im.height,
                     "turn": im.joined_at, "sha256": im.sha256}
            if self.with_images:
                entry["file"] = self._copy_image(im.path, im.sha256)
            images.append(entry)
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "conversation_id": conv.id,
            "model": model,
            "turn": turn_index,
            "liked": liked,
            "answer": conv.turns[turn_index].assistant if 0 <= turn_index < len(conv.turns) else None,
            "system_prompt": system_prompt,
            "turns": [{"user": t.user, "assistant": t.assistant, "stopped": t.stopped} for t in conv.turns],
            "images": images,
        }
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
