"""Shared snapshots in storage: only hashes of tokens are kept, expiry, revocation by the owner, the sweep."""

from __future__ import annotations

import sqlite3
import time

from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.sharing import shown_record
from llava_app.storage.images import ImageStore
from llava_app.storage.shares import Shares


def conversation(store: ImageStore) -> Conversation:
    conv = Conversation()
    s = store.put(Image.new("RGB", (16, 12), "red"))
    conv.add_image(s.sha256, s.path, s.width, s.height)
    conv.ask("What colour?")
    conv.answer("Red.")
    s = store.put(Image.new("RGB", (16, 12), "blue"))
    conv.add_image(s.sha256, s.path, s.width, s.height)  # waiting for the next question: not shared
    conv.ask("And now?")  # never answered: not shared
    return conv


def test_a_snapshot_keeps_only_what_is_shown_and_its_token_is_not_in_the_database(tmp_path):
    store = ImageStore(tmp_path / "images")
    shares = Shares(tmp_path / "s.sqlite3", tmp_path / "files", ttl_s=3600)
    token, expires = shares.create(shown_record(conversation(store)), owner="me")
    record, until = shares.get(token)
    assert [t.user for t in record.turns] == ["What colour?"] and [im.label for im in record.images] == ["Image 1"]
    assert until == expires > time.time() and record.conversation_id == "" and record.branches == []
    with sqlite3.connect(shares.db_path) as db:
        assert token not in repr(db.execute("SELECT * FROM shares").fetchall())
    assert not shares.revoke(token, owner="someone else") and shares.get(token) is not None
    assert shares.revoke(token, owner="me") and shares.get(token) is None


def test_expired_snapshots_are_unreadable_and_swept_with_their_files(tmp_path):
    store = ImageStore(tmp_path / "images")
    shares = Shares(tmp_path / "s.sqlite3", tmp_path / "files", ttl_s=0.05)
    token, _ = shares.create(shown_record(conversation(store)), owner="me")
    time.sleep(0.1)
    assert shares.get(token) is None
    shares.sweep(grace_s=0)
    assert list(shares.files_dir.glob("*/*.png")) == []
