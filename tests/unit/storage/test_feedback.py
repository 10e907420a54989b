"""Feedback records (the page's like/dislike; the browser tests click them)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import attach_file

from llava_app.chat.conversation import Conversation
from llava_app.storage.feedback import FeedbackLog
from llava_app.storage.images import ImageStore
from llava_app.web.handlers.views import chat_value, turn_of_message


def _conversation(tmp_path, image_files) -> Conversation:
    store = ImageStore(tmp_path / "images")
    conv = Conversation()
    for p in image_files[:2]:
        attach_file(conv, store, p)
    conv.ask("Compare them")
    conv.answer("They differ.")
    conv.ask("And now?")
    conv.answer("Still different.")
    return conv


def test_records_the_rating_and_the_text_without_images(tmp_path, image_files):
    conv = _conversation(tmp_path, image_files)
    log = FeedbackLog(tmp_path / "fb" / "feedback.jsonl")
    log.record(conv.to_record(model="tiny-random", system_prompt="Be brief."), 1, False)
    log.record(conv.to_record(), 0, True)
    lines = [json.loads(line) for line in (tmp_path / "fb" / "feedback.jsonl").read_text().splitlines()]
    assert [(r["turn"], r["liked"], r["answer"]) for r in lines] == [(1, False, "Still different."),
                                                                      (0, True, "They differ.")]
    assert lines[0]["model"] == "tiny-random" and lines[0]["system_prompt"] == "Be brief."
    assert [t["user"] for t in lines[0]["turns"]] == ["Compare them", "And now?"]
    assert [im["label"] for im in lines[0]["images"]] == ["Image 1", "Image 2"]
    assert all("file" not in im for im in lines[0]["images"])
    assert not (tmp_path / "fb" / "feedback_images").exists()


def test_images_are_copied_only_when_asked(tmp_path, image_files):
    conv = _conversation(tmp_path, image_files)
    log = FeedbackLog(tmp_path / "feedback.jsonl", with_images=True)
    record = log.record(conv.to_record(), 0, True)
    record_again = log.record(conv.to_record(), 1, True)
    for im, ref in zip(record["images"], conv.images, strict=False):
        copy = tmp_path / im["file"]
        assert copy.parent.name == "feedback_images" and copy.read_bytes() == Path(ref.path).read_bytes()
    assert record_again["images"] == record["images"]
    assert len(list((tmp_path / "feedback_images").iterdir())) == 2  # each image copied once


def test_chatbot_message_index_maps_to_its_turn(tmp_path, image_files):
    conv = _conversation(tmp_path, image_files)
    messages = chat_value(conv, str)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert [turn_of_message(conv, i) for i in answers] == [0, 1]
    assert turn_of_message(conv, 0) is None and turn_of_message(conv, 99) is None


def test_a_feedback_line_is_the_conversation_record(tmp_path, image_files):
    from llava_app.storage.records import ConversationRecord

    conv = _conversation(tmp_path, image_files)
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.record(conv.to_record(model="tiny-random", system_prompt=""), 0, True)
    line = json.loads((tmp_path / "feedback.jsonl").read_text())
    back = ConversationRecord.from_json(line, "feedback.jsonl")
    assert back == conv.to_record(model="tiny-random", system_prompt="")
    assert back.conversation_id == conv.id and (line["turn"], line["liked"]) == (0, True)
