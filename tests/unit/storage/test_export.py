"""Export and import: Markdown, JSON and the LLaMA-Factory zip; byte-for-byte round trips."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest
from conftest import make_image

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.chat.transfer import export_conversation, import_conversation
from llava_app.engine.base import GenerationParams
from llava_app.storage.export import (
    DATASET_NAME,
    SFT_FILE,
    ConversationFileError,
    finetune_record,
    image_filename,
    to_markdown,
)
from llava_app.storage.images import ImageError, ImageStore


@pytest.fixture(scope="module")
def engine(local_backend):
    return local_backend("tiny-random")


def _answer(service: ChatService, conv: Conversation, question: str) -> str:
    service.ask(conv, question)
    text = ""
    for text in service.stream_answer(conv, GenerationParams(max_new_tokens=6)):  # noqa: B007 - the last is the answer
        pass
    return text


@pytest.fixture
def chat(engine, tmp_path, image_files):
    """A conversation with everything an export must carry.

    Images 1 and 2 join turn 1, Image 3 joins turn 2 and Image 2 is then removed (the
    labels keep their numbers), the second answer was stopped, and Image 4 waits for
    the next question.
    """
    service = ChatService(engine, engine.images)  # the engine reads images from its own store
    conv = Conversation()
    service.add_images(conv, [(str(p), p.name) for p in image_files[:2]])
    _answer(service, conv, "Compare Image 1 and Image 2")
    service.add_images(conv, [(str(image_files[2]), image_files[2].name)])
    _answer(service, conv, "And Image 3?")
    conv.turns[-1].stopped = True
    service.remove_images(conv, [2])
    extra = tmp_path / "late.png"
    extra.write_bytes(make_image("yellow", (30, 30)))
    service.add_images(conv, [(str(extra), "late.png")])
    return service, conv


def write(conv: Conversation, kind: str, folder: Path, **settings) -> Path:
    """Export ``conv`` as the page does (``markdown``, ``json`` or ``zip``) into a fresh folder."""
    folder.mkdir(parents=True, exist_ok=True)
    return export_conversation(kind, conv, folder, **settings)


def _same(a: Conversation, b: Conversation) -> None:
    """Turns, labels, names, sizes, turns joined and the image files' bytes are all equal."""
    assert [(t.user, t.assistant, t.stopped) for t in a.turns] == [(t.user, t.assistant, t.stopped) for t in b.turns]
    assert [(i.number, i.label, i.name, i.width, i.height, i.joined_at, i.sha256) for i in a.images] == \
           [(i.number, i.label, i.name, i.width, i.height, i.joined_at, i.sha256) for i in b.images]
    for x, y in zip(a.images, b.images, strict=False):
        assert x.path != y.path  # a different store...
        assert Path(x.path).read_bytes() == Path(y.path).read_bytes()  # ...the same bytes
    assert a.next_number == b.next_number


@pytest.mark.parametrize("kind", ["json", "zip"])
def test_round_trip_is_byte_for_byte_and_the_chat_continues(chat, kind, tmp_path):
    from llava_app.engine.local.backend import LocalBackend

    service, conv = chat
    path = write(conv, kind, tmp_path / "out", model="tiny-random", system_prompt="Be brief.")
    other = ImageStore(tmp_path / "elsewhere")
    imported = import_conversation(path, other, max_images=6)
    assert imported.system_prompt == "Be brief." and imported.model == "tiny-random"
    back = imported.conversation
    _same(conv, back)
    assert back.id != conv.id  # a new conversation, continuing the old one
    assert [im.label for im in back.pending_images] == ["Image 4"]
    # Continue on a server that has only the imported images: the follow-up gets all of them.
    service2 = ChatService(LocalBackend("tiny-random", other, device="cpu"), other)
    assert _answer(service2, back, "What about Image 4?").strip()
    assert back.last_prompt.image_labels == ["Image 1", "Image 3", "Image 4"]
    # Exporting the imported conversation gives the same record again.
    again = import_conversation(write(back, kind, tmp_path / "again"), ImageStore(tmp_path / "third"))
    _same(back, again.conversation)


def test_the_zip_is_a_llama_factory_dataset(chat, tmp_path):
    _, conv = chat
    path = write(conv, "zip", tmp_path, model="tiny-random", system_prompt="Be brief.")
    one, three, four = (image_filename(im) for im in conv.to_record().images)
    assert one == f"images/image-1-{conv.images[0].sha256[:12]}.png"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        info = json.loads(zf.read("dataset_info.json"))
        records = json.loads(zf.read(SFT_FILE))
        assert info[DATASET_NAME]["file_name"] == SFT_FILE
        assert info[DATASET_NAME]["columns"] == {"messages": "messages", "images": "images", "system": "system"}
        assert {"conversation.json", "conversation.md", one, three, four} <= names
        assert not any(n.startswith("images/image-2-") for n in names)  # removed from the conversation
        assert zf.read(one) == Path(conv.images[0].path).read_bytes()
    (record,) = records
    assert record["system"] == "Be brief."
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "user", "assistant"]
    markers = [m["content"].count("<image>") for m in record["messages"]]
    assert markers == [1, 0, 1, 0]  # Image 1 with turn 1, Image 3 with turn 2 (Image 4 was never asked about)
    assert record["images"] == [one, three]
    assert set(record["images"]) <= names
    assert record["messages"][0]["content"].startswith("Image 1: <image>\n")
    assert record["messages"][0]["content"].endswith("Compare Image 1 and Image 2")


def test_a_literal_marker_in_the_text_is_not_an_image():
    conv = Conversation()
    conv.ask('What does "<image>" mean?')
    conv.answer("It marks where an <image> goes.")
    record = finetune_record(conv.to_record())
    assert record["images"] == [] and all("<image>" not in m["content"] for m in record["messages"])
    assert record["messages"][0]["content"] == 'What does "(image)" mean?'


def test_markdown_names_every_image_by_label(chat, tmp_path):
    _, conv = chat
    text = write(conv, "markdown", tmp_path, model="tiny-random").read_text()
    assert "# Conversation with `tiny-random`" in text
    assert text.index("**Image 1** (photo1.png, 64 x 48)") < text.index("**You:** Compare Image 1 and Image 2")
    assert text.index("**Image 3** (photo3.png, 80 x 80)") < text.index("**You:** And Image 3?")
    assert "Image 2" not in text.replace("Compare Image 1 and Image 2", "")
    assert "*(stopped)*" in text
    assert "## Images added after the last question" in text and "**Image 4** (late.png, 30 x 30)" in text
    record = conv.to_record()
    assert f"![Image 1]({image_filename(record.images[0])})" in to_markdown(record, links=True)


def test_finetune_record_skips_an_answer_still_pending(chat):
    _, conv = chat
    conv.ask("one more")
    record = finetune_record(conv.to_record())
    assert len(record["messages"]) == 4 and record["system"] == ""
    assert len(record["images"]) == sum(m["content"].count("<image>") for m in record["messages"])


def test_bad_files_are_refused_with_a_message(chat, tmp_path):
    _, conv = chat
    store = ImageStore(tmp_path / "s")
    junk = tmp_path / "notes.json"
    junk.write_text("hello")
    with pytest.raises(ConversationFileError, match="not a conversation file"):
        import_conversation(junk, store)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConversationFileError, match="not a conversation exported by this app"):
        import_conversation(other, store)

    good = write(conv, "json", tmp_path / "good")
    record = json.loads(good.read_text())
    record["images"][0]["data"] = base64.b64encode(b"not a png at all").decode()
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(record))
    with pytest.raises(ImageError, match="not an image"):
        import_conversation(damaged, store)
    with pytest.raises(ConversationFileError, match="allows 2"):
        import_conversation(good, store, max_images=2)

    zipped = write(conv, "zip", tmp_path / "zipped")
    three = image_filename(conv.to_record().images[1])
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            if item.filename != three:
                dst.writestr(item, src.read(item))
    with pytest.raises(ConversationFileError, match=f"has no {three}"):
        import_conversation(stripped, store)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConversationFileError, match="not a readable zip"):
        import_conversation(broken, store)


# ----- the zip as LLaMA-Factory reads it ------------------------------------------------------------
def load_as_llama_factory(dataset_dir: Path, name: str = DATASET_NAME) -> list[dict]:
    """Check a dataset folder against LLaMA-Factory's documented format; returns its records.

    From hiyouga/LLaMA-Factory ``data/README.md`` (v0.9.5): ``dataset_info.json`` in the
    ``dataset_dir`` registers a dataset by ``file_name``; ``formatting: sharegpt`` with
    ``columns`` naming the record's keys (``messages``, ``system``, ``images``) and, for
    the OpenAI format, ``tags`` (``role_tag: role``, ``content_tag: content``, ``user_tag:
    user``, ``assistant_tag: assistant``); user messages at odd positions, the assistant's at
    even ones; "the number of images should be identical to the ``<image>`` tokens in the
    conversations"; image paths are looked up under ``media_dir`` (default: ``dataset_dir``).
    ``src/llamafactory/data/converter.py`` (``SharegptDatasetConverter``) reads
    ``example[column]`` for every declared column, so each record must have every one.
    """
    entry = json.loads((dataset_dir / "dataset_info.json").read_text())[name]
    assert entry["formatting"] == "sharegpt"
    columns, tags = entry["columns"], entry["tags"]
    assert {"messages", "images"} <= set(columns) <= {"messages", "system", "tools", "images"}
    assert {tags[k] for k in ("role_tag", "content_tag", "user_tag", "assistant_tag")} == \
        {"role", "content", "user", "assistant"}
    records = json.loads((dataset_dir / entry["file_name"]).read_text())
    assert isinstance(records, list) and records
    for record in records:
        assert set(columns.values()) <= set(record)  # else: KeyError in the converter
        messages = record[columns["messages"]]
        roles = [m[tags["role_tag"]] for m in messages]
        assert roles and roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2)
        assert "system" not in columns or isinstance(record[columns["system"]], str)
        images = record[columns["images"]]
        contents = [m[tags["content_tag"]] for m in messages]
        assert sum(c.count("<image>") for c in contents) == len(images)
        assert all("<image>" not in c for c, r in zip(contents, roles, strict=False) if r == tags["assistant_tag"])
        for path in images:
            assert not Path(path).is_absolute() and ".." not in Path(path).parts
            assert (dataset_dir / path).is_file()
    return records


def _photo_chat(tmp_path: Path, colors: list[str], first: str) -> Conversation:
    """Two images with turn 1, none with turn 2, one with turn 3, one waiting: no model needed for the format."""
    from conftest import attach_file

    store = ImageStore(tmp_path / "store")
    files = []
    for i, color in enumerate(colors):
        files.append(tmp_path / f"{first}-{i}.png")
        files[-1].write_bytes(make_image(color, (20 + 10 * i, 30)))
    conv = Conversation()
    attach_file(conv, store, files[0])
    attach_file(conv, store, files[1])
    conv.ask(f"{first}: compare Image 1 and Image 2")
    conv.answer("They differ in colour.")
    conv.ask("Which is larger?")
    conv.answer("Image 2.")
    attach_file(conv, store, files[2])
    conv.ask("And Image 3?")
    conv.answer("Smaller than both.")
    attach_file(conv, store, files[3])  # never asked about: not in the training record
    return conv


@pytest.mark.parametrize("system_prompt", ["Answer in one sentence.", "", "   "])
def test_every_export_loads_as_a_llama_factory_dataset(tmp_path, system_prompt):
    conv = _photo_chat(tmp_path, ["red", "blue", "green", "white"], "q")
    path = write(conv, "zip", tmp_path / "out", model="tiny-random", system_prompt=system_prompt)
    dataset = tmp_path / "dataset"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(dataset)
    (record,) = load_as_llama_factory(dataset)
    assert record["system"] == system_prompt.strip()
    assert [m["content"].count("<image>") for m in record["messages"]] == [2, 0, 0, 0, 1, 0]
    labels = [line.split(":")[0] for m in record["messages"] for line in m["content"].splitlines()
              if line.endswith("<image>")]
    assert labels == ["Image 1", "Image 2", "Image 3"]  # in the order of ``images``, as the model saw them
    assert [Path(p).name.split("-")[1] for p in record["images"]] == ["1", "2", "3"]
    assert [(dataset / p).read_bytes() for p in record["images"]] == [Path(im.path).read_bytes()
                                                                       for im in conv.images[:3]]


def test_two_exports_go_into_one_dataset_folder_as_the_readme_says(tmp_path):
    """README, "Export and import": images/ merged, records appended to one file, one entry added."""
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "dataset_info.json").write_text(json.dumps({"their_own": {"file_name": "their_own.json"}}))
    merged: list[dict] = []
    for first, colors, prompt in [("a", ["red", "blue", "green", "white"], "Be brief."),
                                  ("b", ["black", "yellow", "purple", "orange"], "")]:
        path = write(_photo_chat(tmp_path / first, colors, first), "zip", tmp_path / first / "out",
                     system_prompt=prompt)
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.startswith("images/"):
                    assert not (dataset / member).exists()  # same labels, other pictures: other names
                    (dataset / member).parent.mkdir(exist_ok=True)
                    (dataset / member).write_bytes(zf.read(member))
            merged += json.loads(zf.read(SFT_FILE))
            entry = json.loads(zf.read("dataset_info.json"))[DATASET_NAME]
    (dataset / "my_photos.json").write_text(json.dumps(merged))
    info = json.loads((dataset / "dataset_info.json").read_text())
    info["my_photos"] = {**entry, "file_name": "my_photos.json"}
    (dataset / "dataset_info.json").write_text(json.dumps(info))
    records = load_as_llama_factory(dataset, "my_photos")
    assert [r["system"] for r in records] == ["Be brief.", ""] and len({p for r in records for p in r["images"]}) == 6


# ----- files written by earlier versions ------------------------------------------------------------
def _earlier_export(tmp_path: Path, image_files) -> tuple[dict, list[bytes]]:
    """A conversation file exactly as the export before the one record wrote it (image data left to the caller)."""
    from llava_app.storage.images import load_image_file

    stored = [ImageStore(tmp_path / "orig").put(load_image_file(p)) for p in image_files[:2]]
    data = [Path(s.path).read_bytes() for s in stored]
    record = {
        "format": "llava-app.conversation", "version": 1, "exported_at": "2026-11-20T09:30:00+00:00",
        "model": "tiny-random", "system_prompt": "Be brief.", "conversation_id": "0f" * 16, "next_number": 4,
        "images": [{"number": 1, "label": "Image 1", "name": "photo1.png", "width": 64, "height": 48, "turn": 0,
                    "sha256": stored[0].sha256},
                   {"number": 3, "label": "Image 3", "name": "photo2.png", "width": 40, "height": 90, "turn": 1,
                    "sha256": stored[1].sha256}],
        "turns": [{"user": "What is Image 1?", "assistant": "A red picture.", "stopped": False},
                  {"user": "And Image 3?", "assistant": None, "stopped": False}],
    }
    return record, data


@pytest.mark.parametrize("kind", ["json", "zip"])
def test_files_written_by_the_earlier_export_still_import(tmp_path, image_files, kind):
    record, data = _earlier_export(tmp_path, image_files)
    if kind == "json":
        for entry, raw in zip(record["images"], data, strict=False):
            entry["data"] = base64.b64encode(raw).decode()
        path = tmp_path / "old.json"
        path.write_text(json.dumps(record, indent=1))
    else:
        path = tmp_path / "old.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for entry, raw in zip(record["images"], data, strict=False):
                entry["file"] = f"images/image-{entry['number']}.png"  # the earlier names
                zf.writestr(entry["file"], raw)
            zf.writestr("conversation.json", json.dumps(record))
    imported = import_conversation(path, ImageStore(tmp_path / "new"))
    conv = imported.conversation
    assert (imported.model, imported.system_prompt) == ("tiny-random", "Be brief.")
    assert [(im.label, im.name, im.width, im.joined_at) for im in conv.images] == \
        [("Image 1", "photo1.png", 64, 0), ("Image 3", "photo2.png", 40, 1)]
    assert [(t.user, t.assistant) for t in conv.turns] == [("What is Image 1?", "A red picture.")]
    assert [im.label for im in conv.pending_images] == ["Image 3"] and conv.next_number == 4
    assert [Path(im.path).read_bytes() for im in conv.images] == data
