"""Conversation logic: stable labels, ordering, mid-chat additions, undo, regenerate."""

from __future__ import annotations

import copy

import pytest

from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError


def add(conv: Conversation, sha: str, **kw):
    return conv.add_image(sha, f"/img/{sha}.png", 10, 10, name=f"{sha}.png", **kw)


def image_labels_per_message(conv, system=""):
    out = []
    for m in conv.messages(system):
        if m["role"] == "user":
            out.append([p["ref"].label for p in m["content"] if p["type"] == "image"])
    return out


def test_labels_follow_upload_order_and_never_change():
    conv = Conversation()
    a, _ = add(conv, "a")
    b, _ = add(conv, "b")
    c, _ = add(conv, "c")
    assert [a.label, b.label, c.label] == ["Image 1", "Image 2", "Image 3"]
    conv.remove_image(1)
    d, _ = add(conv, "d")
    assert [im.label for im in conv.images] == ["Image 2", "Image 3", "Image 4"]
    assert d.label == "Image 4"


def test_each_image_sits_after_its_label_in_the_users_message():
    conv = Conversation()
    add(conv, "a")
    add(conv, "b")
    conv.ask("compare them")
    (msg,) = conv.messages()
    kinds = [(p["type"], p.get("text") or p["ref"].label) for p in msg["content"]]
    assert kinds == [("text", "Image 1:"), ("image", "Image 1"), ("text", "Image 2:"), ("image", "Image 2"),
                     ("text", "compare them")]


def test_follow_up_keeps_earlier_images_and_a_mid_chat_image_joins_its_own_turn():
    conv = Conversation()
    add(conv, "a")
    add(conv, "b")
    conv.ask("first")
    conv.answer("one")
    before = copy.deepcopy(conv.messages("sys"))
    conv.ask("second")
    conv.answer("two")
    add(conv, "c")
    conv.ask("third")
    msgs = conv.messages("sys")
    assert image_labels_per_message(conv, "sys") == [["Image 1", "Image 2"], [], ["Image 3"]]
    # The earlier turns' input did not change when Image 3 arrived.
    assert msgs[: len(before)] == before
    assert msgs[0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    assert msgs[-1]["role"] == "user"  # pending turn: no assistant message yet


def test_pending_images_wait_for_the_next_question():
    conv = Conversation()
    add(conv, "a")
    assert [im.label for im in conv.pending_images] == ["Image 1"]
    conv.ask("q")
    assert conv.pending_images == []


def test_undo_returns_the_question_and_its_images_go_back_to_pending():
    conv = Conversation()
    add(conv, "a")
    conv.ask("q1")
    conv.answer("a1")
    add(conv, "b")
    conv.ask("q2")
    conv.answer("a2")
    assert conv.undo() == "q2"
    assert [t.user for t in conv.turns] == ["q1"]
    assert [im.label for im in conv.pending_images] == ["Image 2"]
    conv.ask("q2 again")
    assert image_labels_per_message(conv) == [["Image 1"], ["Image 2"]]
    conv.undo()
    conv.undo()
    with pytest.raises(UserError, match="nothing to undo"):
        conv.undo()
    # Both images are pending again and go with the next question.
    conv.ask("fresh")
    assert image_labels_per_message(conv) == [["Image 1", "Image 2"]]


def test_regenerate_clears_only_the_last_answer():
    conv = Conversation()
    conv.ask("q1")
    conv.answer("a1")
    conv.ask("q2")
    conv.answer("partial", stopped=True)
    conv.regenerate()
    assert conv.turns[-1].assistant is None and conv.turns[-1].stopped is False
    assert conv.turns[0].assistant == "a1"
    assert conv.messages()[-1] == {"role": "user", "content": [{"type": "text", "text": "q2"}]}
    with pytest.raises(UserError):
        Conversation().regenerate()


def test_same_picture_twice_is_kept_once_and_the_limit_is_enforced():
    conv = Conversation()
    first, added = add(conv, "a", max_images=2)
    again, added_again = add(conv, "a", max_images=2)
    assert added and not added_again and again is first
    add(conv, "b", max_images=2)
    with pytest.raises(UserError, match="limit is 2"):
        add(conv, "c", max_images=2)


def test_a_question_cannot_start_while_the_last_answer_is_pending():
    conv = Conversation()
    conv.ask("q1")
    with pytest.raises(UserError, match="still being written"):
        conv.ask("q2")


def test_summary_is_plain_json_data():
    import json

    conv = Conversation()
    add(conv, "a")
    conv.ask("q")
    conv.answer("a")
    data = conv.summary()
    assert json.loads(json.dumps(data)) == data
    assert data["images"][0]["label"] == "Image 1" and data["turns"] == [
        {"user": "q", "assistant": "a", "stopped": False, "interrupted": False, "cut": None, "finish_reason": None,
         "in_prompt": True}]


def test_each_conversation_has_its_own_id():
    assert Conversation().id != Conversation().id


# ----- the one way in from data: Conversation.restore ------------------------------------------
def _record(images, turns, next_number=1):
    from llava_app.storage.records import ConversationRecord, ImageRecord, TurnRecord

    return ConversationRecord(
        images=[ImageRecord(number=n, sha256=sha, width=10, height=10, turn=t, name=f"{sha}.png")
                for n, sha, t in images],
        turns=[TurnRecord(user=u, assistant=a) for u, a in turns], next_number=next_number,
        files={sha: f"/img/{sha}.png" for _, sha, _ in images})


def test_to_record_and_restore_give_the_same_conversation_with_a_new_id():
    conv = Conversation()
    add(conv, "a")
    add(conv, "b")
    conv.ask("q1")
    conv.answer("a1", stopped=True)
    conv.remove_image(1)
    add(conv, "c")
    back = Conversation.restore(conv.to_record())
    assert back.id != conv.id
    assert [(im.label, im.sha256, im.joined_at, im.path, im.name) for im in back.images] == \
        [(im.label, im.sha256, im.joined_at, im.path, im.name) for im in conv.images]
    assert [(t.user, t.assistant, t.stopped) for t in back.turns] == [("q1", "a1", True)]
    assert back.next_number == conv.next_number == 4
    assert image_labels_per_message(back) == image_labels_per_message(conv)
    assert [im.label for im in back.pending_images] == ["Image 3"]


def test_an_answers_stats_survive_the_record_and_damaged_ones_are_dropped():
    """The answer footer comes back after a reload: its numbers travel in the record (as JSON too)."""
    from llava_app.chat.parts import AnswerStats
    from llava_app.storage.records import ConversationRecord

    conv = Conversation()
    conv.ask("q1")
    stats = AnswerStats(ttft_s=0.25, tokens_per_s=12.5, prompt_tokens=40, completion_tokens=9, images_encoded=1,
                        images_cached=0, queued_s=14.0)
    conv.answer("a1", stats=stats)
    data = conv.to_record().to_json()
    assert Conversation.restore(ConversationRecord.from_json(data)).turns[0].stats == stats
    data["turns"][0]["stats"] = {"ttft_s": "soon", "completion_tokens": True, "queued_s": -1}
    assert Conversation.restore(ConversationRecord.from_json(data)).turns[0].stats is None


def test_restore_keeps_labels_never_reuses_them_and_keeps_a_picture_once():
    record = _record([(3, "a", 0), (5, "b", 1), (7, "a", 1)], [("q1", "a1"), ("q2", None)], next_number=6)
    conv = Conversation.restore(record)
    assert [(im.label, im.joined_at) for im in conv.images] == [("Image 3", 0), ("Image 5", 1)]  # "a" again: kept once
    assert conv.turns[-1].assistant is None  # the unanswered last turn stays pending
    assert conv.next_number == 8  # no number the record gave is given again (7 went to the repeat)
    new, _ = add(conv, "z")
    assert new.label == "Image 8"
    # Images joined "after" the last turn wait for the next question; a missing file is left out.
    record = _record([(1, "a", 9), (2, "b", 0)], [("q1", "a1")])
    del record.files["b"]
    conv = Conversation.restore(record)
    assert [(im.label, im.joined_at) for im in conv.images] == [("Image 1", 1)]
    assert [im.label for im in conv.pending_images] == ["Image 1"] and conv.next_number == 3


def test_restore_refuses_a_label_given_twice_and_too_many_images():
    with pytest.raises(UserError, match="Image 2 is given twice"):
        Conversation.restore(_record([(2, "a", 0), (2, "b", 0)], []))
    with pytest.raises(UserError, match="limit is 2"):
        Conversation.restore(_record([(1, "a", 0), (2, "b", 0), (3, "c", 0)], []), max_images=2)
