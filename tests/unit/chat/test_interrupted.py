"""An answer cut off by a server crash comes back marked interrupted, and can be regenerated.

``BrowserSaves.saving`` saves the answer being written, marked ``interrupted``, so a
server killed mid-answer leaves a saved conversation that says so; the save at the end of
the stream (the process still alive) clears the mark.
"""

from __future__ import annotations

from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.saved import BrowserSaves
from llava_app.storage.images import ImageStore
from llava_app.storage.records import ConversationRecord
from llava_app.storage.saved import SavedConversations, entry_key, new_browser_token
from llava_app.web.handlers import views


def saves_and_conv(tmp_path):
    store = ImageStore(tmp_path / "images")
    saved = SavedConversations(tmp_path / "saved" / "c.sqlite3", tmp_path / "saved" / "img")
    saves = BrowserSaves(saved, store, partial_interval_s=0.0)
    conv = Conversation()
    s = store.put(Image.new("RGB", (16, 12), "red"))
    conv.add_image(s.sha256, s.path, s.width, s.height, name="red.png")
    token = new_browser_token()
    saves.bind(conv, token)
    conv.ask("Describe Image 1")
    return saves, saved, store, conv, token


def load(saved, store, token) -> Conversation:
    """The browser's newest saved conversation, as a page load would restore it."""
    owner = entry_key(token)
    return Conversation.restore(saved.load(saved.listing(owner)[0]["id"], store, owner=owner))


def test_the_answer_being_written_is_saved_marked_interrupted(tmp_path):
    saves, saved, store, conv, token = saves_and_conv(tmp_path)

    def answer():
        yield "A red"
        yield "A red square"
        conv.answer("A red square, small.")

    stream = saves.saving(answer(), conv)
    assert next(stream) == "A red"
    mid = load(saved, store, token)  # what a restart would find now
    assert mid.turns[-1].assistant == "A red" and mid.turns[-1].interrupted and not mid.turns[-1].stopped
    assert conv.turns[-1].assistant is None  # the live conversation is untouched
    assert list(stream) == ["A red square"]
    done = load(saved, store, token)
    assert done.turns[-1].assistant == "A red square, small." and not done.turns[-1].interrupted


def test_the_page_shows_the_mark_and_regenerate_clears_it(tmp_path):
    saves, saved, store, conv, token = saves_and_conv(tmp_path)
    stream = saves.saving(iter(["Half an ans"]), conv)
    next(stream)
    _, back, pending = saves.open(token)
    assert pending is None  # the question stays with its half answer, not back in the box
    assert "Half an ans" in views.chat_value(back, str)[-1]["content"]
    assert "(interrupted" in views.chat_value(back, str)[-1]["content"]
    assert back.summary()["turns"][-1]["interrupted"] is True
    back.regenerate()
    assert back.turns[-1].assistant is None and not back.turns[-1].interrupted
    back.answer("A whole answer.")
    assert "(interrupted" not in views.chat_value(back, str)[-1]["content"]


def test_the_flag_round_trips_and_old_files_read_as_not_interrupted():
    data = {"format": ConversationRecord().to_json()["format"], "version": 1, "images": [],
            "turns": [{"user": "q1", "assistant": "a1", "stopped": False},
                      {"user": "q2", "assistant": "a2", "stopped": False, "interrupted": True}]}
    record = ConversationRecord.from_json(data)
    assert [t.interrupted for t in record.turns] == [False, True]
    again = ConversationRecord.from_json(record.to_json())
    assert [t.interrupted for t in again.turns] == [False, True]
    assert "interrupted" not in again.to_json()["turns"][0]  # files stay as they were when nothing was cut off
    conv = Conversation.restore(record)
    assert [t.interrupted for t in conv.turns] == [False, True]
    assert [t.interrupted for t in conv.to_record().turns] == [False, True]
