"""Conversations out and back in: Markdown, JSON, and a LLaMA-Factory fine-tuning zip.

Everything here takes or gives a ``ConversationRecord`` (``records.py``). Three downloads:
Markdown to read (image labels, names and sizes), JSON to keep or move (the record with
the images inside, base64), and a zip for fine-tuning: a LLaMA-Factory multimodal
``sharegpt`` record (OpenAI-style ``messages``, one ``<image>`` marker per image in
prompt order, ``images`` relative to the dataset folder, ``system`` always present),
``dataset_info.json``, the image files (named by label and content hash, so exports can
share one dataset folder), plus the JSON and Markdown. The JSON file and the zip import
back into a record that the chat layer turns into a new conversation.

Images travel as the stored normalised PNG bytes, and come back through the same
safe decoder as any upload, so an import gives the same pixels, hash, label and file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llava_app.storage.images import ImageLimits, ImageStore, decode_image
from llava_app.storage.records import ConversationFileError, ConversationRecord, ImageRecord

__all__ = ["ConversationFileError", "DATASET_NAME", "SFT_FILE", "dataset_info", "finetune_record", "image_filename",
           "read_conversation", "to_markdown", "write_json", "write_markdown", "write_zip"]

IMAGE_DIR = "images"
ZIP_JSON = "conversation.json"
ZIP_MARKDOWN = "conversation.md"
SFT_FILE = "llava_app_sft.json"
DATASET_NAME = "llava_app"
IMAGE_MARKER = "<image>"
MAX_TEXT_BYTES = 8 * 1024 * 1024  # the turns' text in one file; far beyond any real chat
EXPORTS_KEPT = 64  # export folders kept on disk; older ones are removed
EXPORT_MIN_AGE_S = 600.0  # ... but none younger than this: it may still be written or handed to Gradio


def image_filename(im: ImageRecord) -> str:
    """The image's file inside a zip: ``images/image-3-<hash>.png`` for Image 3 (unique across exports)."""
    return f"{IMAGE_DIR}/image-{im.number}-{im.sha256[:12]}.png"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _image_file(record: ConversationRecord, im: ImageRecord) -> str:
    path = record.files.get(im.sha256)
    if path is None:
        raise FileNotFoundError(f"no file for {im.label}")
    return path


# ----- out ------------------------------------------------------------------------------------
#: what each answer points at (the API's ``/regions`` entries, one list per turn): derived from the answer and
#: its pictures by the chat layer, written beside each turn, never read back (an import derives them again)
Regions = list[list[dict[str, Any]]]


def export_json(record: ConversationRecord, *, embed_images: bool = True, regions: Regions | None = None
                ) -> dict[str, Any]:
    """The record's JSON plus the export time; images as base64 (``embed_images``) or as zip file names; each
    turn's ``regions`` where it points at something."""
    data = record.to_json()
    data["exported_at"] = _now()
    for entry, pointed in zip(data["turns"], regions or [], strict=False):
        if pointed:
            entry["regions"] = pointed
    for entry, im in zip(data["images"], record.images, strict=False):
        if embed_images:
            entry["data"] = base64.b64encode(Path(_image_file(record, im)).read_bytes()).decode("ascii")
        else:
            entry["file"] = image_filename(im)
    return data


def to_markdown(record: ConversationRecord, *, links: bool = False, regions: Regions | None = None) -> str:
    """A readable transcript: each turn's images by label (``links``: with the zip's image files), and what each
    answer points at (``regions``), in the pictures' pixels."""

    def image_line(im: ImageRecord) -> str:
        line = f"**{im.label}** ({im.name or 'image'}, {im.width} x {im.height})"
        if links:
            line += f"\n\n![{im.label}]({image_filename(im)})"
        return line

    model = record.model
    lines = ["# Conversation" + (f" with `{model}`" if model else ""), "",
             f"Exported {_now()}: {len(record.images)} image(s), {len(record.turns)} turn(s).", ""]
    for i, turn in enumerate(record.turns):
        lines += [f"## Turn {i + 1}", ""]
        for im in record.images_of_turn(i):
            lines += [image_line(im), ""]
        lines += [f"**You:** {turn.user}", ""]
        if turn.assistant is not None:
            lines += [f"**Assistant:** {turn.assistant}" + (" *(stopped)*" if turn.stopped else "")
                      + (" *(interrupted)*" if turn.interrupted else "")
                      + (f" *(cut: {turn.cut})*" if turn.cut else ""), ""]
            pointed = regions[i] if regions and i < len(regions) else []
            lines += [f"- {_pointed_line(entry)}" for entry in pointed] + ([""] if pointed else [])
    pending = record.pending_images
    if pending:
        lines += ["## Images added after the last question", ""]
        for im in pending:
            lines += [image_line(im), ""]
    return "\n".join(lines)


def _pointed_line(entry: dict[str, Any]) -> str:
    """One mark of an answer for the transcript: "Image 2, red car: box [10, 20, 110, 220]"."""
    where = entry.get("image") or "picture unclear"
    label = f", {entry['label']}" if entry.get("label") else ""
    kind = "box" if "box" in entry else "point" if "point" in entry else "as written"
    values = entry.get("box") or entry.get("point") or entry.get("coords") or []
    return f"{where}{label}: {kind} [{', '.join(str(v) for v in values)}]"


def _no_marker(text: str) -> str:
    # A literal "<image>" in the text would be read as one more image by the trainer.
    return text.replace(IMAGE_MARKER, "(image)")


def finetune_record(record: ConversationRecord) -> dict[str, Any]:
    """One LLaMA-Factory multimodal record: ``messages`` with ``<image>`` markers, ``images`` in the same order.

    Answered turns only (an answer still pending has nothing to learn from); each
    image sits in the user message of the turn it joined, after its label, as the
    model saw it. ``system`` is always there (empty when there was no system prompt),
    since ``dataset_info`` declares the column and LLaMA-Factory reads it from every record.
    """
    messages: list[dict[str, str]] = []
    images: list[str] = []
    for i, turn in enumerate(record.turns):
        if turn.assistant is None:
            break
        content = ""
        for im in record.images_of_turn(i):
            content += f"{im.label}: {IMAGE_MARKER}\n"
            images.append(image_filename(im))
        messages.append({"role": "user", "content": content + _no_marker(turn.user)})
        messages.append({"role": "assistant", "content": _no_marker(turn.assistant)})
    return {"messages": messages, "images": images, "system": (record.system_prompt or "").strip()}


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
    folder = exports_dir / f"export-{secrets.token_urlsafe(18)}"  # unguessable: only its own page is given it
    folder.mkdir(mode=0o700)
    return folder


def write_markdown(record: ConversationRecord, path: str | Path, regions: Regions | None = None) -> Path:
    """The Markdown transcript as a file."""
    path = Path(path)
    path.write_text(to_markdown(record, regions=regions), encoding="utf-8")
    return path


def write_json(record: ConversationRecord, path: str | Path, regions: Regions | None = None) -> Path:
    """The conversation as one JSON file with its images inside."""
    path = Path(path)
    path.write_text(json.dumps(export_json(record, embed_images=True, regions=regions), ensure_ascii=False, indent=1),
                    encoding="utf-8")
    return path


def write_zip(record: ConversationRecord, path: str | Path, regions: Regions | None = None) -> Path:
    """The fine-tuning zip: the LLaMA-Factory record and ``dataset_info.json``, images, JSON and Markdown."""
    path = Path(path)

    def dump(data: Any) -> str:
        return json.dumps(data, ensure_ascii=False, indent=1)

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(SFT_FILE, dump([finetune_record(record)]))
        zf.writestr("dataset_info.json", dump(dataset_info()))
        zf.writestr(ZIP_JSON, dump(export_json(record, embed_images=False, regions=regions)))
        zf.writestr(ZIP_MARKDOWN, to_markdown(record, links=True, regions=regions))
        for im in record.images:  # PNG is compressed already
            zf.write(_image_file(record, im), image_filename(im), compress_type=zipfile.ZIP_STORED)
    return path


# ----- back in --------------------------------------------------------------------------------
def read_conversation(path: str | Path, store: ImageStore, *, limits: ImageLimits = ImageLimits(),
                      max_images: int = 6) -> ConversationRecord:
    """Read a JSON file or zip written by this module: its record, with its images put in ``store``.

    Images go through the same decoder as uploads (format allow-list, size and pixel
    limits) and into ``store``; the record's hashes and sizes are those of the stored
    images, and ``files`` says where they are. Anything that is not such a file raises
    ``ConversationFileError`` (or ``ImageError`` for a bad image) with a message that
    says what is wrong.
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
            raise ConversationFileError("file.too_large", name=name, count=max_images)
        data = path.read_bytes()
    except OSError as exc:
        raise ConversationFileError("file.unreadable", name=name) from exc
    raw = _parse_json(data, name)

    def image_bytes(entry: dict[str, Any], label: str) -> bytes:
        encoded = entry.get("data")
        if not isinstance(encoded, str):
            raise ConversationFileError("file.no_image_data", name=name, label=label)
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConversationFileError("file.image_data_damaged", name=name, label=label) from exc

    return _with_images(raw, image_bytes, store, limits, max_images, name)


def _json_limit(limits: ImageLimits, max_images: int) -> int:
    return int(max_images * limits.max_bytes * 4 / 3) + MAX_TEXT_BYTES


def _parse_json(data: bytes, name: str) -> dict[str, Any]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConversationFileError("file.not_conversation", name=name) from exc
    except RecursionError:  # nested thousands of levels deep: no conversation looks like that
        raise ConversationFileError("file.not_conversation", name=name) from None
    return raw


def _read_zip(path: Path, store: ImageStore, limits: ImageLimits, max_images: int) -> ConversationRecord:
    name = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConversationFileError("file.bad_zip", name=name) from exc

    def member(filename: str, limit: int) -> bytes:
        # Members are read by the names the JSON gives, into memory, never extracted:
        # no path in the zip reaches the disk; sizes are checked as the bytes come.
        try:
            with zf.open(filename) as fh:
                data = fh.read(limit + 1)
        except KeyError:
            raise ConversationFileError("file.missing_member", name=name, member=filename) from None
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as exc:
            raise ConversationFileError("file.member_damaged", name=name, member=filename) from exc
        if len(data) > limit:
            raise ConversationFileError("file.member_too_large", name=name, member=filename)
        return data

    def image_bytes(entry: dict[str, Any], label: str) -> bytes:
        filename = entry.get("file")
        if not isinstance(filename, str):
            raise ConversationFileError("file.no_member_name", name=name, label=label)
        return member(filename, limits.max_bytes)

    with zf:
        raw = _parse_json(member(ZIP_JSON, MAX_TEXT_BYTES), name)
        return _with_images(raw, image_bytes, store, limits, max_images, name)


def _with_images(raw: dict[str, Any], image_bytes: Callable[[dict[str, Any], str], bytes], store: ImageStore,
                 limits: ImageLimits, max_images: int, name: str) -> ConversationRecord:
    """The file's record, each image decoded like an upload and stored (its hash and size from the store)."""
    record = ConversationRecord.from_json(raw, name)
    shown = [im for im in record.images if im.turn >= 0]  # the others belong to other branches only
    if len(shown) > max_images or len(record.images) > 4 * max_images:
        raise ConversationFileError("file.too_many_images", name=name, count=len(shown), limit=max_images)
    images: list[ImageRecord] = []
    for im, entry in zip(record.images, raw["images"], strict=False):
        img = decode_image(image_bytes(entry, im.label), limits, f"{name}: {im.label}")
        stored = store.put(img)
        images.append(dataclasses.replace(im, sha256=stored.sha256, width=stored.width, height=stored.height))
        record.files[stored.sha256] = stored.path
    record.images = images
    return record
