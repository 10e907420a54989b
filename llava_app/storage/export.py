"""Conversations out and back in: Markdown, JSON, and a LLaMA-Factory fine-tuning record.

Three downloads: Markdown to read (image labels, names and sizes), JSON to keep or
move (the images inside, base64), and a zip for fine-tuning (a LLaMA-Factory
multimodal ``sharegpt`` record with one ``<image>`` marker per image in prompt order,
the images as files, ``dataset_info.json``, plus the JSON and Markdown). The JSON file
and the zip import back into a new conversation that continues where it stopped.

Images travel as the stored normalised PNG bytes, and come back through the same
safe decoder as any upload, so an import gives the same pixels, hash, label and file.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llava_app.chat.conversation import Conversation, ImageRef, Turn
from llava_app.errors import UserError
from llava_app.storage.images import ImageLimits, ImageStore, decode_image

FORMAT = "llava-app.conversation"
VERSION = 1
IMAGE_DIR = "images"
ZIP_JSON = "conversation.json"
ZIP_MARKDOWN = "conversation.md"
SFT_FILE = "llava_app_sft.json"
DATASET_NAME = "llava_app"
IMAGE_MARKER = "<image>"
MAX_TEXT_BYTES = 8 * 1024 * 1024  # the turns' text in one file; far beyond any real chat
EXPORTS_KEPT = 64  # export folders kept on disk; older ones are removed
EXPORT_MIN_AGE_S = 600.0  # ... but none younger than this: it may still be written or handed to Gradio


class ConversationFileError(UserError):
    """An import that is not a conversation this app wrote (or is damaged)."""


@dataclass
class Imported:
    """What an import gives back: the conversation and the settings it was held with."""

    conversation: Conversation
    system_prompt: str | None
    model: str


def image_filename(ref: ImageRef) -> str:
    """The image's file inside a zip (``images/image-3.png`` for Image 3)."""
    return f"{IMAGE_DIR}/image-{ref.number}.png"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----- out ------------------------------------------------------------------------------------
def conversation_record(conv: Conversation, *, model: str = "", system_prompt: str = "",
                        embed_images: bool = True) -> dict[str, Any]:
    """The conversation as JSON-able data; images as base64 (``embed_images``) or as zip file names."""
    images = []
    for im in conv.images:
        entry: dict[str, Any] = {"number": im.number, "label": im.label, "name": im.name, "width": im.width,
                                 "height": im.height, "turn": im.joined_at, "sha256": im.sha256}
        if embed_images:
            entry["data"] = base64.b64encode(Path(im.path).read_bytes()).decode("ascii")
        else:
            entry["file"] = image_filename(im)
        images.append(entry)
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": _now(),
        "model": model,
        "system_prompt": system_prompt,
        "conversation_id": conv.id,
        "next_number": conv.next_number,
        "images": images,
        "turns": [{"user": t.user, "assistant": t.assistant, "stopped": t.stopped} for t in conv.turns],
    }


def to_markdown(conv: Conversation, *, model: str = "", image_dir: str | None = None) -> str:
    """A readable transcript: each turn's images by label (linked when ``image_dir`` is given)."""

    def image_line(im: ImageRef) -> str:
        line = f"**{im.label}** ({im.name or 'image'}, {im.width} x {im.height})"
        if image_dir is not None:
            line += f"\n\n![{im.label}]({image_dir}/image-{im.number}.png)"
        return line

    lines = ["# Conversation" + (f" with `{model}`" if model else ""), "",
             f"Exported {_now()}: {len(conv.images)} image(s), {len(conv.turns)} turn(s).", ""]
    for i, turn in enumerate(conv.turns):
        lines += [f"## Turn {i + 1}", ""]
        for im in conv.images_for_turn(i):
            lines += [image_line(im), ""]
        lines += [f"**You:** {turn.user}", ""]
        if turn.assistant is not None:
            lines += [f"**Assistant:** {turn.assistant}" + (" *(stopped)*" if turn.stopped else ""), ""]
    pending = conv.pending_images
    if pending:
        lines += ["## Images added after the last question", ""]
        for im in pending:
            lines += [image_line(im), ""]
    return "\n".join(lines)


def _no_marker(text: str) -> str:
    # A literal "<image>" in the text would be read as one more image by the trainer.
    return text.replace(IMAGE_MARKER, "(image)")


def finetune_record(conv: Conversation, system_prompt: str = "") -> dict[str, Any]:
    """One LLaMA-Factory multimodal record: ``messages`` with ``<image>`` markers, ``images`` in the same order.

    Answered turns only (an answer still pending has nothing to learn from); each
    image sits in the user message of the turn it joined, after its label, as the
    model saw it.
    """
    messages: list[dict[str, str]] = []
    images: list[str] = []
    for i, turn in enumerate(conv.turns):
        if turn.assistant is None:
            break
        content = ""
        for im in conv.images_for_turn(i):
            content += f"{im.label}: {IMAGE_MARKER}\n"
            images.append(image_filename(im))
        messages.append({"role": "user", "content": content + _no_marker(turn.user)})
        messages.append({"role": "assistant", "content": _no_marker(turn.assistant)})
    record: dict[str, Any] = {"messages": messages, "images": images}
    if system_prompt.strip():
        record["system"] = system_prompt.strip()
    return record


def dataset_info() -> dict[str, Any]:
    """The ``dataset_info.json`` entry that registers the record file with LLaMA-Factory."""
    return {DATASET_NAME: {
        "file_name": SFT_FILE,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images", "system": "system"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }}


def new_export_folder(exports_dir: Path, keep: int = EXPORTS_KEPT, min_age_s: float = EXPORT_MIN_AGE_S) -> Path:
    """A fresh folder for one export; the oldest folders beyond ``keep`` go, unless younger than ``min_age_s``.

    Several app processes may share ``exports_dir``: a folder another one removes meanwhile
    is skipped, and a young one (another process's export in progress) stays.
    """
    exports_dir.mkdir(parents=True, exist_ok=True)
    folders = []
    for path in exports_dir.iterdir():
        try:
            folders.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    folders.sort()
    now = time.time()
    for mtime, path in folders[:max(0, len(folders) - keep + 1)]:
        if now - mtime >= min_age_s:
            shutil.rmtree(path, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=exports_dir))


def write_markdown(conv: Conversation, path: str | Path, *, model: str = "") -> Path:
    """The Markdown transcript as a file."""
    path = Path(path)
    path.write_text(to_markdown(conv, model=model), encoding="utf-8")
    return path


def write_json(conv: Conversation, path: str | Path, *, model: str = "", system_prompt: str = "") -> Path:
    """The conversation as one JSON file with its images inside."""
    path = Path(path)
    record = conversation_record(conv, model=model, system_prompt=system_prompt, embed_images=True)
    path.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_zip(conv: Conversation, path: str | Path, *, model: str = "", system_prompt: str = "") -> Path:
    """The fine-tuning zip: the LLaMA-Factory record and ``dataset_info.json``, images, JSON and Markdown."""
    path = Path(path)
    record = conversation_record(conv, model=model, system_prompt=system_prompt, embed_images=False)

    def dump(data: Any) -> str:
        return json.dumps(data, ensure_ascii=False, indent=1)

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(SFT_FILE, dump([finetune_record(conv, system_prompt)]))
        zf.writestr("dataset_info.json", dump(dataset_info()))
        zf.writestr(ZIP_JSON, dump(record))
        zf.writestr(ZIP_MARKDOWN, to_markdown(conv, model=model, image_dir=IMAGE_DIR))
        for im in conv.images:
            zf.write(im.path, image_filename(im), compress_type=zipfile.ZIP_STORED)  # PNG is compressed already
    return path


# ----- back in --------------------------------------------------------------------------------
def read_conversation(path: str | Path, store: ImageStore, *, limits: ImageLimits = ImageLimits(),
                      max_images: int = 6) -> Imported:
    """Import a JSON file or zip written by this module into a new conversation.

    Images go through the same decoder as uploads (format allow-list, size and pixel
    limits) and into ``store``; anything that is not such a file raises
    ``ConversationFileError`` with a message that says what is wrong.
    """
    path = Path(path)
    name = path.name
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head.startswith(b"PK"):
            return _read_zip(path, store, limits, max_images)
        size = path.stat().st_size
        if size > _json_limit(limits, max_images):
            raise ConversationFileError(f"{name} is too large to be a conversation of at most {max_images} images.")
        data = path.read_bytes()
    except OSError as exc:
        raise ConversationFileError(f"{name} could not be read.") from exc
    record = _parse_json(data, name)

    def image_bytes(entry: dict[str, Any]) -> bytes:
        encoded = entry.get("data")
        if not isinstance(encoded, str):
            raise ConversationFileError(f"{name}: {entry.get('label', 'an image')} has no image data.")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConversationFileError(f"{name}: the data of {entry.get('label', 'an image')} is damaged.") from exc

    return _build(record, image_bytes, store, limits, max_images, name)


def _json_limit(limits: ImageLimits, max_images: int) -> int:
    return int(max_images * limits.max_bytes * 4 / 3) + MAX_TEXT_BYTES


def _parse_json(data: bytes, name: str) -> dict[str, Any]:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConversationFileError(f"{name} is not a conversation file (JSON or zip exported by this app).") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConversationFileError(f"{name} is not a conversation exported by this app.")
    if not isinstance(record.get("version"), int) or record["version"] > VERSION:
        raise ConversationFileError(f"{name} was written by a newer version of this app; update the app to read it.")
    return record


def _read_zip(path: Path, store: ImageStore, limits: ImageLimits, max_images: int) -> Imported:
    name = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConversationFileError(f"{name} is not a readable zip file.") from exc

    def member(filename: str, limit: int) -> bytes:
        # Members are read by the names the JSON gives, into memory, never extracted:
        # no path in the zip reaches the disk; sizes are checked as the bytes come.
        try:
            with zf.open(filename) as fh:
                data = fh.read(limit + 1)
        except KeyError:
            raise ConversationFileError(f"{name} has no {filename}; export the conversation again.") from None
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:
            raise ConversationFileError(f"{name}: {filename} is damaged.") from exc
        if len(data) > limit:
            raise ConversationFileError(f"{name}: {filename} is larger than this server accepts.")
        return data

    def image_bytes(entry: dict[str, Any]) -> bytes:
        filename = entry.get("file")
        if not isinstance(filename, str):
            raise ConversationFileError(f"{name}: {entry.get('label', 'an image')} names no file.")
        return member(filename, limits.max_bytes)

    with zf:
        record = _parse_json(member(ZIP_JSON, MAX_TEXT_BYTES), name)
        return _build(record, image_bytes, store, limits, max_images, name)


def _text(value: Any, what: str, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConversationFileError(f"{name}: {what} is missing or not text.")
    return value


def _build(record: dict[str, Any], image_bytes, store: ImageStore, limits: ImageLimits, max_images: int,
           name: str) -> Imported:
    turns_in, images_in = record.get("turns"), record.get("images")
    if not isinstance(turns_in, list) or not isinstance(images_in, list):
        raise ConversationFileError(f"{name} has no turns or images list.")
    if len(images_in) > max_images:
        raise ConversationFileError(f"{name} has {len(images_in)} images; this server allows {max_images} "
                                    "in a conversation.")
    turns: list[Turn] = []
    for i, t in enumerate(turns_in):
        if not isinstance(t, dict):
            raise ConversationFileError(f"{name}: turn {i + 1} is damaged.")
        assistant = _text(t.get("assistant"), f"the answer of turn {i + 1}", name, optional=True)
        if assistant is None and i != len(turns_in) - 1:
            raise ConversationFileError(f"{name}: turn {i + 1} has no answer, but later turns follow it.")
        turns.append(Turn(user=_text(t.get("user"), f"the question of turn {i + 1}", name),
                          assistant=assistant, stopped=bool(t.get("stopped", False))))
    if turns and turns[-1].assistant is None:
        turns.pop()  # an answer that was never written: its images wait for the next question
    conv = Conversation(turns=turns)
    numbers: set[int] = set()
    for entry in images_in:
        if not isinstance(entry, dict):
            raise ConversationFileError(f"{name}: an image entry is damaged.")
        number, turn = entry.get("number"), entry.get("turn")
        if not isinstance(number, int) or number < 1 or number in numbers:
            raise ConversationFileError(f"{name}: image numbers must be distinct positive whole numbers.")
        if not isinstance(turn, int) or turn < 0:
            raise ConversationFileError(f"{name}: Image {number} has no turn.")
        numbers.add(number)
        label = f"Image {number}"
        img = decode_image(image_bytes(entry), limits, f"{name}: {label}")
        stored = store.put(img)
        if conv.find_image(stored.sha256) is not None:
            raise ConversationFileError(f"{name}: {label} repeats {conv.find_image(stored.sha256).label}.")
        conv.images.append(ImageRef(number=number, sha256=stored.sha256, path=stored.path, width=stored.width,
                                    height=stored.height, joined_at=min(turn, len(turns)),
                                    name=_text(entry.get("name", ""), f"the name of {label}", name) or ""))
    declared = record.get("next_number")
    if not isinstance(declared, int) or declared > 1_000_000:
        declared = 1
    conv.next_number = max([declared, *(n + 1 for n in numbers)])
    system_prompt = record.get("system_prompt")
    return Imported(conversation=conv, system_prompt=system_prompt if isinstance(system_prompt, str) else None,
                    model=record.get("model") if isinstance(record.get("model"), str) else "")
