"""Export and import: Markdown, JSON and the LLaMA-Factory zip; byte-for-byte round trips."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest

from conftest import make_image
from llava_app.engine.base import GenerationParams
from llava_app.chat.conversation import Conversation
from llava_app.chat.transfer import export_conversation, import_conversation
from llava_app.storage.export import (DATASET_NAME, SFT_FILE, ConversationFileError, finetune_record, image_filename,
                                      to_markdown)
from llava_app.storage.images import ImageError, ImageStore
from llava_app.chat.service import ChatService


@pytest.fixture(scope="module")
def engine(local_backend):
    return local_backend("tiny-random")


def _answer(service: ChatService, conv: Conversation, question: str) -> str:
    service.ask(conv, question)
    text = ""
    for text in service.stream_answer(conv, GenerationParams(max_new_tokens=6)):
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
    for x, y in zip(a.images, b.images):
        assert x.path != y.path  # a different store...
        assert Path(x.path).read_bytes() == Path(y.path).read_bytes()  # ...the same bytes
    assert a.next_number == b.next_number


@pytest.mark.parametrize("kind", ["json", "zip"])
def test_round_trip_is_byte_for_byte_and_the_chat_continues(chat, kind, tmp_path):
    from llava_app.engine.local import LocalBackend

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
