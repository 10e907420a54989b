"""Earlier chats: several saved conversations per browser, listed newest first, opened, renamed, deleted."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from PIL import Image

from llava_app.application import App
from llava_app.chat.conversation import Conversation
from llava_app.chat.saved import BrowserSaves
from llava_app.chat.service import ChatService
from llava_app.config import Config
from llava_app.errors import UserError
from llava_app.storage.images import ImageStore
from llava_app.storage.saved import SavedConversations, entry_key, new_browser_token
from llava_app.storage.shown import ShownPictures
from tests.fakes import RecordingBackend


@pytest.fixture
def app(tmp_path):
    store = ImageStore(tmp_path / "images")
    saved = SavedConversations(tmp_path / "saved" / "c.sqlite3", tmp_path / "saved" / "img")
    return App(Config(data_dir=str(tmp_path)), ChatService(RecordingBackend(), store, stream_interval=0),
               BrowserSaves(saved, store), None, image_root=store.root, exports_dir=tmp_path / "exports",
               shown=ShownPictures(tmp_path / "shown"))


def chat(app: App, conv: Conversation, question: str, color: str | None = None) -> None:
    if color:
        s = app.service.store.put(Image.new("RGB", (16, 12), color))
        conv.add_image(s.sha256, s.path, s.width, s.height, name=f"{color}.png")
    conv.ask(question)
    conv.answer("ok")
    app.saved.save(conv)


def test_new_chat_keeps_the_previous_one_in_the_list_newest_first(app):
    token = new_browser_token()
    first = Conversation()
    app.saved.bind(first, token)
    chat(app, first, "What colour is the car in this long photo of a busy street at night?", "red")
    time.sleep(0.01)
    second = app.replace(first, Conversation())
    assert [e["title"] for e in app.saved.listing(second)] == [
        "What colour is the car in this long photo of a busy street at night?"]  # an empty chat is not listed
    chat(app, second, "Second question")
    listing = app.saved.listing(second)
    assert [e["title"] for e in listing] == ["Second question", listing[1]["title"]]
    assert [e["current"] for e in listing] == [True, False]
    assert listing[1]["turns"] == 1 and len(listing[1]["thumbnails"]) == 1 and listing[0]["thumbnails"] == []
    assert listing[0]["updated"] >= listing[1]["updated"]
    assert listing[1]["thumbnails"][0].startswith(app.saved.files_dir)  # served to the page from there
    assert app.saved.limits() == {"days": 7.0, "max_mb": 1024.0}

    # reopen the first: the second stays in the list; the reopened one saves to its own row
    reopened, pending = app.reopen(second, listing[1]["id"])
    assert pending is None and [t.user for t in reopened.turns] == [first.turns[0].user]
    assert [im.label for im in reopened.images] == ["Image 1"]
    chat(app, reopened, "A follow-up")
    assert len(app.saved.listing(reopened)) == 2
    assert app.saved.listing(reopened)[0]["id"] == listing[1]["id"]

    # rename, then delete
    app.saved.rename(reopened, listing[0]["id"], "  My second chat  ")
    titles = {e["id"]: e["title"] for e in app.saved.listing(reopened)}
    assert titles[listing[0]["id"]] == "My second chat"
    app.saved.delete(reopened, listing[0]["id"])
    assert [e["id"] for e in app.saved.listing(reopened)] == [listing[1]["id"]]

    # a page load brings back the newest
    token_back, conv, _ = app.saved.open(token)
    assert token_back == token and [t.user for t in conv.turns][-1] == "A follow-up"

    # a chat whose one question was taken back (Undo), then New chat: no empty "0 turns" entry is left
    taken_back = app.replace(conv, Conversation())
    chat(app, taken_back, "Never mind")
    app.service.undo(taken_back)
    app.saved.save(taken_back)
    assert "Never mind" not in [e["title"] for e in app.saved.listing(taken_back)]
    after = app.replace(taken_back, Conversation())
    assert [e["title"] for e in app.saved.listing(after)] == [listing[1]["title"]]


def test_another_browser_cannot_open_rename_or_delete_them(app):
    mine, theirs = Conversation(), Conversation()
    app.saved.bind(mine, new_browser_token())
    app.saved.bind(theirs, new_browser_token())
    chat(app, mine, "Mine")
    row = app.saved.listing(mine)[0]["id"]
    assert app.saved.listing(theirs) == []
    for attempt in (lambda: app.reopen(theirs, row), lambda: app.saved.rename(theirs, row, "x"),
                    lambda: app.saved.delete(theirs, row)):
        with pytest.raises(UserError):
            attempt()
    assert app.saved.listing(mine)[0]["title"] == "Mine"


def test_a_database_of_one_conversation_per_browser_still_reads(tmp_path):
    """Rows written before browsers had lists: keyed by the browser's key itself, no owner or title column."""
    db_path = tmp_path / "old.sqlite3"
    token = new_browser_token()
    key = entry_key(token)
    data = {"format": "llava-app.conversation", "version": 1, "next_number": 1, "images": [],
            "turns": [{"user": "An old question", "assistant": "An old answer"}]}
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE conversations (key TEXT PRIMARY KEY, updated REAL NOT NULL, size INTEGER NOT NULL, "
                   "data TEXT NOT NULL)")
        db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?)", (key, time.time(), 10, json.dumps(data)))
    store = ImageStore(tmp_path / "images")
    saves = BrowserSaves(SavedConversations(db_path, tmp_path / "img"), store)
    _, conv, _ = saves.open(token)
    assert [(t.user, t.assistant) for t in conv.turns] == [("An old question", "An old answer")]
    assert [e["title"] for e in saves.listing(conv)] == ["An old question"]
    conv.ask("A new question")
    conv.answer("ok")
    saves.save(conv)
    assert len(saves.listing(conv)) == 1  # it goes on saving to its old row
