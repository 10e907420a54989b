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
        {"user": "q", "assistant": "a", "stopped": False, "in_prompt": True}]


def test_each_conversation_has_its_own_id():
    assert Conversation().id != Conversation().id
