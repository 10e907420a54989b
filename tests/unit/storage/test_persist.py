"""Saved conversations (kept across reloads): the store, its keys, retention, size cap and atomic writes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.saved import BrowserSaves
from llava_app.chat.service import ChatService
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import SavedConversations, entry_key, is_browser_token, new_browser_token


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def saved(tmp_path) -> SavedConversations:
    return SavedConversations(tmp_path / "saved" / "c.sqlite3", tmp_path / "saved" / "img")


def save(saved: SavedConversations, key: str, conv: Conversation) -> None:
    saved.save(key, conv.to_record(with_prompt=True))


def load(saved: SavedConversations, key: str, store: ImageStore) -> Conversation | None:
    record = saved.load(key, store)
    return None if record is None else Conversation.restore(record)


def conversation(store: ImageStore, colors=("red", "blue"), turns=2) -> Conversation:
    conv = Conversation()
    for i, color in enumerate(colors):
        s = store.put(Image.new("RGB", (16 + i, 12), color))
        conv.add_image(s.sha256, s.path, s.width, s.height, name=f"{color}.png")
        if i < turns:
            conv.ask(f"What colour is Image {i + 1}? <img src=x onerror=alert(1)>")
            conv.answer(f"It is {color}.")
    return conv


def test_round_trip_restores_turns_images_and_labels(saved, store, tmp_path):
    conv = conversation(store)
    conv.remove_image(1)  # labels stay stable: Image 2 remains Image 2
    save(saved, "k1", conv)
    fresh_store = ImageStore(tmp_path / "other-images")  # e.g. after the server's store was swept
    back = load(saved, "k1", fresh_store)
    assert back is not None and back.id != conv.id  # a new live id: two tabs never share cancel flags
    assert [(t.user, t.assistant) for t in back.turns] == [(t.user, t.assistant) for t in conv.turns]
    assert [(im.label, im.sha256, im.joined_at, im.name) for im in back.images] == \
        [(im.label, im.sha256, im.joined_at, im.name) for im in conv.images]
    assert back.next_number == 3
    for im in back.images:
        assert Path(im.path).is_relative_to(fresh_store.root) and Image.open(im.path).size == (im.width, im.height)
    assert load(saved, "other", store) is None


def test_tokens_are_unguessable_and_only_hashes_are_stored(saved, store):
    tokens = {new_browser_token() for _ in range(100)}
    assert len(tokens) == 100 and all(is_browser_token(t) and len(t) == 43 for t in tokens)
    for bad in ("", None, 42, "../../etc/passwd", "x" * 43 + "!", {"a": 1}):
        assert not is_browser_token(bad)
    token = new_browser_token()
    saves = BrowserSaves(saved, store)
    conv = conversation(store)
    saves.bind(conv, token)
    saves.save(conv)
    raw = saved.db_path.read_bytes() + b"".join(p.read_bytes() for p in saved.db_path.parent.glob("*-wal"))
    assert token.encode() not in raw
    # The same token with another signed-in user name, or another token, finds nothing.
    assert entry_key(token, "alice") != entry_key(token) and load(saved, entry_key(token, "alice"), store) is None
    assert saves.open(new_browser_token())[1] is None
    # A forged value is never looked up: the browser gets a new token instead.
    token2, conv2, _ = saves.open("not-a-token")
    assert is_browser_token(token2) and conv2 is None
    assert saves.open(token)[1] is not None


def test_pending_question_goes_back_to_the_box(saved, store):
    saves = BrowserSaves(saved, store)
    token = new_browser_token()
    conv = conversation(store, turns=1)
    conv.ask("A question whose answer was being written")
    saves.bind(conv, token)
    saves.save(conv)
    _, back, pending = saves.open(token)
    assert pending == "A question whose answer was being written"
    assert len(back.turns) == 1 and back.turns[0].assistant == "It is red."
    assert [im.label for im in back.pending_images] == ["Image 2"]


def test_saving_stream_saves_the_final_answer_even_when_the_conversation_was_released(saved, store):
    saves = BrowserSaves(saved, store)
    token = new_browser_token()
    conv = conversation(store, turns=1)
    saves.bind(conv, token)
    row = saves.key_of(conv)
    conv.ask("Tell me more")

    def answer():
        try:
            yield "partial"
            yield "partial and more"
        finally:
            conv.answer("partial and more", stopped=True)

    stream = saves.saving(answer(), conv)
    next(stream)
    saves.release(conv.id)  # the tab closed mid-answer
    stream.close()
    back = load(saved, row, store)
    assert back.turns[-1].assistant == "partial and more" and back.turns[-1].stopped
    assert [entry["id"] for entry in saved.listing(entry_key(token))] == [row]  # still in the browser's list


def test_retention_deletes_old_entries_and_their_files(tmp_path, store):
    saved = SavedConversations(tmp_path / "c.sqlite3", tmp_path / "img", retention_s=3600, orphan_grace_s=0)
    save(saved, "old", conversation(store, colors=("red",)))
    save(saved, "new", conversation(store, colors=("blue",)))
    with sqlite3.connect(saved.db_path) as db:
        db.execute("UPDATE conversations SET updated = ? WHERE key = 'old'", (time.time() - 7200,))
    saved.sweep()
    assert saved.keys() == ["new"]
    assert len(list(saved.files_dir.glob("*/*.png"))) == 1


def test_size_cap_drops_the_oldest_first_and_keeps_the_newest(tmp_path, store):
    saved = SavedConversations(tmp_path / "c.sqlite3", tmp_path / "img", orphan_grace_s=0)
    for i, _color in enumerate(["red", "green", "blue", "white"]):
        img = Image.effect_noise((64, 64), 40 + i).convert("RGB")  # ~12 KB each, incompressible
        conv = Conversation()
        s = store.put(img)
        conv.add_image(s.sha256, s.path, s.width, s.height)
        save(saved, f"k{i}", conv)
        time.sleep(0.01)
    one = max(p.stat().st_size for p in saved.files_dir.glob("*/*.png"))
    saved.max_bytes = int(2.5 * one)
    saved.sweep()
    assert saved.keys() == ["k3", "k2"]
    assert saved.size_bytes() <= saved.max_bytes
    saved.max_bytes = 10
    saved.sweep()
    assert saved.keys() == ["k3"]  # over the cap alone, the newest still stays


def test_images_shared_between_entries_are_stored_once(saved, store):
    a, b = conversation(store), conversation(store)
    save(saved, "a", a)
    save(saved, "b", b)
    assert len(list(saved.files_dir.glob("*/*.png"))) == 2


def test_secret_is_stable_and_private(saved):
    assert saved.secret() == saved.secret()
    mode = os.stat(saved.db_path.with_suffix(".secret")).st_mode & 0o777
    assert mode == 0o600


_CRASH = textwrap.dedent("""
    import os, sys, sqlite3
    sys.path[:0] = [{root!r}]
    from PIL import Image
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import ImageStore
    import llava_app.storage.saved as storage_saved

    store = ImageStore({images!r})
    saved = storage_saved.SavedConversations({db!r}, {files!r})
    conv = Conversation()
    s = store.put(Image.new("RGB", (20, 20), "red"))
    conv.add_image(s.sha256, s.path, 20, 20)
    conv.ask("first question"); conv.answer("first answer")
    saved.save("k", conv.to_record())            # the last good conversation

    s2 = store.put(Image.effect_noise((300, 300), 50).convert("RGB"))
    conv.add_image(s2.sha256, s2.path, 300, 300)
    conv.ask("second question"); conv.answer("second answer")
    where = {where!r}
    if where == "image":                         # die half-way through copying an image file
        def half_copy(src, dst, *a, **k):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read(1000)); g.flush(); os.fsync(g.fileno())
            os._exit(9)
        storage_saved.os.link = lambda *a: (_ for _ in ()).throw(OSError("no links here"))
        storage_saved.shutil.copyfile = half_copy
    else:                                        # die inside the transaction, after the row was written
        real_connect = sqlite3.connect
        class Dying:
            def __init__(self, *a, **k): self.db = real_connect(*a, **k)
            def __enter__(self): self.db.__enter__(); return self
            def __exit__(self, *exc): os._exit(9)
            def execute(self, *a): return self.db.execute(*a)
            def close(self): self.db.close()
        storage_saved.sqlite3.connect = Dying
    saved.save("k", conv.to_record())
    print("not reached")
""")


@pytest.mark.parametrize("where", ["image", "row"])
def test_crash_mid_write_leaves_the_last_good_conversation(tmp_path, where):
    paths = dict(root=str(Path(__file__).resolve().parents[3]), images=str(tmp_path / "images"),
                 db=str(tmp_path / "h" / "c.sqlite3"), files=str(tmp_path / "h" / "img"), where=where)
    done = subprocess.run([sys.executable, "-c", _CRASH.format(**paths)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr[-2000:]
    saved = SavedConversations(paths["db"], paths["files"])
    back = load(saved, "k", ImageStore(tmp_path / "fresh"))
    assert back is not None
    assert [(t.user, t.assistant) for t in back.turns] == [("first question", "first answer")]
    assert len(back.images) == 1 and Image.open(back.images[0].path).size == (20, 20)
    # No half-written file carries a final name.
    for p in saved.files_dir.glob("*/*.png"):
        Image.open(p).load()


def test_without_an_saved_nothing_is_kept(store):
    saves = BrowserSaves(None, store)
    assert not saves.enabled
    assert saves.open(new_browser_token()) == ("", None, None)
    conv = conversation(store)
    saves.bind(conv, new_browser_token())
    saves.save(conv)  # a no-op, not an error
    assert saves.key_of(conv) is None


def test_a_row_saved_in_the_earlier_format_still_loads(saved, store):
    """Rows written before the one record (no ``format``, ``joined_at``) load as they did."""
    conv = conversation(store)
    save(saved, "k", conv)  # the image files
    red, blue = conv.images
    old_row = {  # exactly what the earlier code wrote
        "version": 1, "next_number": 3,
        "images": [{"number": 1, "sha256": red.sha256, "width": 16, "height": 12, "joined_at": 0, "name": "red.png"},
                   {"number": 2, "sha256": blue.sha256, "width": 17, "height": 12, "joined_at": 1,
                    "name": "blue.png"}],
        "turns": [{"user": "q1", "assistant": "a1", "stopped": False},
                  {"user": "q2", "assistant": "a2", "stopped": True}],
        "last_prompt": {"text": "USER: ...", "n_images": 1, "n_tokens": 42, "image_labels": ["Image 2"]},
    }
    with sqlite3.connect(saved.db_path) as db:
        db.execute("UPDATE conversations SET data = ? WHERE key = 'k'", (json.dumps(old_row),))
    back = load(saved, "k", store)
    assert [(im.label, im.name, im.joined_at, im.width) for im in back.images] == \
        [("Image 1", "red.png", 0, 16), ("Image 2", "blue.png", 1, 17)]
    assert [(t.user, t.assistant, t.stopped) for t in back.turns] == [("q1", "a1", False), ("q2", "a2", True)]
    assert back.next_number == 3 and back.last_prompt.n_tokens == 42 and back.last_prompt.image_labels == ["Image 2"]
    # A damaged row starts the browser afresh instead of failing the page.
    with sqlite3.connect(saved.db_path) as db:
        db.execute("UPDATE conversations SET data = ? WHERE key = 'k'", (json.dumps({"version": 1, "turns": 3}),))
    assert saved.load("k", store) is None


def test_saving_never_sweeps_housekeeping_does(tmp_path, store, local_backend):
    saved = SavedConversations(tmp_path / "c.sqlite3", tmp_path / "img", retention_s=3600, orphan_grace_s=0)
    save(saved, "old", conversation(store, colors=("red",)))
    with sqlite3.connect(saved.db_path) as db:
        db.execute("UPDATE conversations SET updated = ? WHERE key = 'old'", (time.time() - 7200,))
    saves, token = BrowserSaves(saved, store), new_browser_token()
    conv = conversation(store, colors=("blue",))
    saves.bind(conv, token)
    saves.save(conv)  # on the user's request path: no sweep, however long since the last
    assert sorted(saved.keys()) == sorted(["old", saves.key_of(conv)])

    from llava_app.application import App
    from llava_app.config import Config
    from llava_app.storage.shown import ShownPictures

    app = App(Config(data_dir=str(tmp_path)), ChatService(local_backend("tiny-random"), store), saves, None,
              image_root=store.root, exports_dir=tmp_path / "exports",
              shown=ShownPictures(tmp_path / "shown"))
    service = app  # the janitor's pass: the service's housekeeping, then the saved conversations'
    service.housekeep()
    assert saved.keys() == [saves.key_of(conv)]
    assert len(list(saved.files_dir.glob("*/*.png"))) == 1  # the old one's image went with it
    # Housekeeping runs often; it sweeps saved conversations at most every sweep_interval_s.
    save(saved, "old", conversation(store, colors=("red",)))
    with sqlite3.connect(saved.db_path) as db:
        db.execute("UPDATE conversations SET updated = ? WHERE key = 'old'", (time.time() - 7200,))
    service.housekeep()
    assert "old" in saved.keys()
    saved.sweep_interval_s = 0
    service.housekeep()
    assert "old" not in saved.keys()
