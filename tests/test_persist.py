"""Conversations kept across reloads: the archive, its keys, retention, size cap and atomic writes."""

from __future__ import annotations

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
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import (BrowserHistory, ConversationArchive, entry_key, is_browser_token,
                               new_browser_token)


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def archive(tmp_path) -> ConversationArchive:
    return ConversationArchive(tmp_path / "hist" / "c.sqlite3", tmp_path / "hist" / "img")


def conversation(store: ImageStore, colors=("red", "blue"), turns=2) -> Conversation:
    conv = Conversation()
    for i, color in enumerate(colors):
        s = store.put(Image.new("RGB", (16 + i, 12), color))
        conv.add_image(s.sha256, s.path, s.width, s.height, name=f"{color}.png")
        if i < turns:
            conv.ask(f"What colour is Image {i + 1}? <img src=x onerror=alert(1)>")
            conv.answer(f"It is {color}.")
    return conv


def test_round_trip_restores_turns_images_and_labels(archive, store, tmp_path):
    conv = conversation(store)
    conv.remove_image(1)  # labels stay stable: Image 2 remains Image 2
    archive.save("k1", conv)
    fresh_store = ImageStore(tmp_path / "other-images")  # e.g. after the server's store was swept
    back = archive.load("k1", fresh_store)
    assert back is not None and back.id != conv.id  # a new live id: two tabs never share cancel flags
    assert [(t.user, t.assistant) for t in back.turns] == [(t.user, t.assistant) for t in conv.turns]
    assert [(im.label, im.sha256, im.joined_at, im.name) for im in back.images] == \
        [(im.label, im.sha256, im.joined_at, im.name) for im in conv.images]
    assert back.next_number == 3
    for im in back.images:
        assert Path(im.path).is_relative_to(fresh_store.root) and Image.open(im.path).size == (im.width, im.height)
    assert archive.load("other", store) is None


def test_tokens_are_unguessable_and_only_hashes_are_stored(archive, store):
    tokens = {new_browser_token() for _ in range(100)}
    assert len(tokens) == 100 and all(is_browser_token(t) and len(t) == 43 for t in tokens)
    for bad in ("", None, 42, "../../etc/passwd", "x" * 43 + "!", {"a": 1}):
        assert not is_browser_token(bad)
    token = new_browser_token()
    history = BrowserHistory(archive, store)
    conv = conversation(store)
    history.bind(conv, token)
    history.save(conv)
    raw = archive.db_path.read_bytes() + b"".join(p.read_bytes() for p in archive.db_path.parent.glob("*-wal"))
    assert token.encode() not in raw
    # The same token with another signed-in user name, or another token, finds nothing.
    assert entry_key(token, "alice") != entry_key(token) and archive.load(entry_key(token, "alice"), store) is None
    assert history.open(new_browser_token())[1] is None
    # A forged value is never looked up: the browser gets a new token instead.
    token2, conv2, _ = history.open("not-a-token")
    assert is_browser_token(token2) and conv2 is None
    assert history.open(token)[1] is not None


def test_pending_question_goes_back_to_the_box(archive, store):
    history = BrowserHistory(archive, store)
    token = new_browser_token()
    conv = conversation(store, turns=1)
    conv.ask("A question whose answer was being written")
    history.bind(conv, token)
    history.save(conv)
    _, back, pending = history.open(token)
    assert pending == "A question whose answer was being written"
    assert len(back.turns) == 1 and back.turns[0].assistant == "It is red."
    assert [im.label for im in back.pending_images] == ["Image 2"]


def test_saving_stream_saves_the_final_answer_even_when_the_conversation_was_released(archive, store):
    history = BrowserHistory(archive, store)
    token = new_browser_token()
    conv = conversation(store, turns=1)
    history.bind(conv, token)
    conv.ask("Tell me more")

    def answer():
        try:
            yield "partial"
            yield "partial and more"
        finally:
            conv.answer("partial and more", stopped=True)

    stream = history.saving(answer(), conv)
    next(stream)
    history.release(conv.id)  # the tab closed mid-answer
    stream.close()
    back = archive.load(entry_key(token), store)
    assert back.turns[-1].assistant == "partial and more" and back.turns[-1].stopped


def test_retention_deletes_old_entries_and_their_files(tmp_path, store):
    archive = ConversationArchive(tmp_path / "c.sqlite3", tmp_path / "img", retention_s=3600, orphan_grace_s=0)
    archive.save("old", conversation(store, colors=("red",)))
    archive.save("new", conversation(store, colors=("blue",)))
    with sqlite3.connect(archive.db_path) as db:
        db.execute("UPDATE conversations SET updated = ? WHERE key = 'old'", (time.time() - 7200,))
    archive.sweep()
    assert archive.keys() == ["new"]
    assert len(list(archive.files_dir.glob("*/*.png"))) == 1


def test_size_cap_drops_the_oldest_first_and_keeps_the_newest(tmp_path, store):
    archive = ConversationArchive(tmp_path / "c.sqlite3", tmp_path / "img", orphan_grace_s=0)
    for i, color in enumerate(["red", "green", "blue", "white"]):
        img = Image.effect_noise((64, 64), 40 + i).convert("RGB")  # ~12 KB each, incompressible
        conv = Conversation()
        s = store.put(img)
        conv.add_image(s.sha256, s.path, s.width, s.height)
        archive.save(f"k{i}", conv)
        time.sleep(0.01)
    one = max(p.stat().st_size for p in archive.files_dir.glob("*/*.png"))
    archive.max_bytes = int(2.5 * one)
    archive.sweep()
    assert archive.keys() == ["k3", "k2"]
    assert archive.size_bytes() <= archive.max_bytes
    archive.max_bytes = 10
    archive.sweep()
    assert archive.keys() == ["k3"]  # over the cap alone, the newest still stays


def test_images_shared_between_entries_are_stored_once(archive, store):
    a, b = conversation(store), conversation(store)
    archive.save("a", a)
    archive.save("b", b)
    assert len(list(archive.files_dir.glob("*/*.png"))) == 2


def test_secret_is_stable_and_private(archive):
    assert archive.secret() == archive.secret()
    mode = os.stat(archive.db_path.with_suffix(".secret")).st_mode & 0o777
    assert mode == 0o600


_CRASH = textwrap.dedent("""
    import os, sys, sqlite3
    sys.path[:0] = [{root!r}]
    from PIL import Image
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import ImageStore
    import llava_app.storage.saved as persist

    store = ImageStore({images!r})
    archive = persist.ConversationArchive({db!r}, {files!r})
    conv = Conversation()
    s = store.put(Image.new("RGB", (20, 20), "red"))
    conv.add_image(s.sha256, s.path, 20, 20)
    conv.ask("first question"); conv.answer("first answer")
    archive.save("k", conv)                      # the last good conversation

    s2 = store.put(Image.effect_noise((300, 300), 50).convert("RGB"))
    conv.add_image(s2.sha256, s2.path, 300, 300)
    conv.ask("second question"); conv.answer("second answer")
    where = {where!r}
    if where == "image":                         # die half-way through copying an image file
        def half_copy(src, dst, *a, **k):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read(1000)); g.flush(); os.fsync(g.fileno())
            os._exit(9)
        persist.os.link = lambda *a: (_ for _ in ()).throw(OSError("no links here"))
        persist.shutil.copyfile = half_copy
    else:                                        # die inside the transaction, after the row was written
        real_connect = sqlite3.connect
        class Dying:
            def __init__(self, *a, **k): self.db = real_connect(*a, **k)
            def __enter__(self): self.db.__enter__(); return self
            def __exit__(self, *exc): os._exit(9)
            def execute(self, *a): return self.db.execute(*a)
            def close(self): self.db.close()
        persist.sqlite3.connect = Dying
    archive.save("k", conv)
    print("not reached")
""")


@pytest.mark.parametrize("where", ["image", "row"])
def test_crash_mid_write_leaves_the_last_good_conversation(tmp_path, where):
    paths = dict(root=str(Path(__file__).resolve().parents[1]), images=str(tmp_path / "images"),
                 db=str(tmp_path / "h" / "c.sqlite3"), files=str(tmp_path / "h" / "img"), where=where)
    done = subprocess.run([sys.executable, "-c", _CRASH.format(**paths)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr[-2000:]
    archive = ConversationArchive(paths["db"], paths["files"])
    back = archive.load("k", ImageStore(tmp_path / "fresh"))
    assert back is not None
    assert [(t.user, t.assistant) for t in back.turns] == [("first question", "first answer")]
    assert len(back.images) == 1 and Image.open(back.images[0].path).size == (20, 20)
    # No half-written file carries a final name.
    for p in archive.files_dir.glob("*/*.png"):
        Image.open(p).load()


def test_without_an_archive_nothing_is_kept(store):
    history = BrowserHistory(None, store)
    assert not history.enabled
    assert history.open(new_browser_token()) == ("", None, None)
    conv = conversation(store)
    history.bind(conv, new_browser_token())
    history.save(conv)  # a no-op, not an error
    assert history.key_of(conv) is None
