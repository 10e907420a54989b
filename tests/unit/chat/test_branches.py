"""Edit any turn, keep every branch: the conversation tree, on the recording fake engine."""

from __future__ import annotations

import copy
import json

import pytest

from llava_app.chat import branches
from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine.base import GenerationParams
from llava_app.errors import UserError
from llava_app.storage.records import ConversationRecord
from tests.fakes import RecordingBackend

PARAMS = GenerationParams(max_new_tokens=8)


@pytest.fixture
def chat(store):
    backend = RecordingBackend()
    return backend, ChatService(backend, store, stream_interval=0, max_images=8)


def say(service, backend, conv, question, answer, files=()):
    if files:
        service.add_images(conv, [(str(f), f.name) for f in files])
    backend.enqueue(answer)
    service.ask(conv, question)
    return list(service.stream_answer(conv, PARAMS))[-1]


def three_turns(chat, image_files):
    backend, service = chat
    conv = Conversation()
    say(service, backend, conv, "q1", "a1", image_files[:1])
    say(service, backend, conv, "q2", "a2", image_files[1:2])
    say(service, backend, conv, "q3", "a3")
    return conv


def shown(conv):
    return [(t.user, t.assistant) for t in conv.turns]


def test_editing_an_earlier_question_answers_again_and_keeps_what_followed(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    backend.enqueue("b2")
    service.edit(conv, 1, "q2 edited")
    assert list(service.stream_answer(conv, PARAMS))[-1] == "b2"
    assert shown(conv) == [("q1", "a1"), ("q2 edited", "b2")]
    # the model saw turn 1 and its answer, then the edited question with turn 2's image
    assert backend.last_prompt.splitlines() == ["[user] Image 1: <image> q1", "[assistant] a1",
                                                "[user] Image 2: <image> q2 edited"]
    assert conv.summary()["branches"][1] == {"turn": 1, "index": 1, "count": 2, "images": ["Image 2"]}
    service.switch_branch(conv, 1, 0)
    assert shown(conv) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
    assert [(b["index"], b["count"]) for b in conv.summary()["branches"]] == [(0, 1), (0, 2), (0, 1)]
    service.switch_branch(conv, 1, 1)
    assert shown(conv) == [("q1", "a1"), ("q2 edited", "b2")]


def test_regenerate_adds_a_sibling_instead_of_overwriting(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    backend.enqueue("a3 again")
    service.regenerate(conv)
    list(service.stream_answer(conv, PARAMS))
    assert shown(conv)[-1] == ("q3", "a3 again")
    assert conv.summary()["branches"][2] == {"turn": 2, "index": 1, "count": 2, "images": []}
    service.switch_branch(conv, 2, 0)
    assert shown(conv)[-1] == ("q3", "a3")


def test_images_belong_to_the_conversation_a_branch_sends_only_its_own(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    # turn 2 again, without Image 2 and with a new picture: it is Image 3 (the next label)
    service.edit(conv, 1, "q2 with another picture", files=[(str(image_files[2]), "c.png")], remove=[2])
    list(service.stream_answer(conv, PARAMS))
    assert [im.label for im in conv.images] == ["Image 1", "Image 3"]
    assert "Image 2" not in backend.last_prompt and "Image 3: <image> q2 with another picture" in backend.last_prompt
    assert [im.label for im in conv.stash] == ["Image 2"]
    service.switch_branch(conv, 1, 0)
    assert [im.label for im in conv.images] == ["Image 1", "Image 2"]
    assert [im.joined_at for im in conv.images] == [0, 1]
    # the same picture uploaded again on this branch keeps the label it has on the other
    conv2 = copy.deepcopy(conv)
    service.add_images(conv2, [(str(image_files[2]), "again.png")])
    assert [im.label for im in conv2.pending_images] == ["Image 3"]
    # files of every branch stay in use (housekeeping must not delete the other branch's picture)
    service.touch(conv)
    assert {im.sha256 for im in conv.all_images()} <= service.sessions.images_in_use()


def test_edit_refuses_what_it_cannot_do(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    with pytest.raises(UserError):
        service.edit(conv, 7, "no such turn")
    with pytest.raises(UserError):
        service.edit(conv, 1, "   ")
    with pytest.raises(UserError):
        service.edit(conv, 1, "q2", remove=[1])  # Image 1 came with turn 1
    with pytest.raises(UserError):
        service.switch_branch(conv, 1, 3)
    assert shown(conv) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]


def test_a_failed_edit_shows_the_branch_it_would_have_replaced(chat, image_files, store):
    backend, service = chat
    conv = three_turns(chat, image_files)

    def broken(request):
        raise RuntimeError("engine down")
        yield  # pragma: no cover

    service.edit(conv, 1, "q2 edited")
    backend.stream = broken
    with pytest.raises(RuntimeError):
        list(service.stream_answer(conv, PARAMS))
    assert shown(conv) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
    assert conv.summary()["branches"][1]["count"] == 1


def test_context_fitting_and_the_prompt_follow_the_branch_shown(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    service.edit(conv, 0, "q1 edited", remove=[1])
    list(service.stream_answer(conv, PARAMS))
    assert backend.last_prompt == "[user] q1 edited"
    assert conv.summary()["image_count"] == 0 and conv.summary()["prompt_images"] == 0
    assert service.preview(conv).n_images == 0


def test_branches_survive_the_record_and_a_version_1_file_still_reads(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    service.edit(conv, 1, "q2 edited", remove=[2])
    list(service.stream_answer(conv, PARAMS))
    record = conv.to_record()
    data = json.loads(json.dumps(record.to_json()))
    assert data["version"] == 2 and len(data["branches"]) == 2
    back = ConversationRecord.from_json(data)
    back.files = record.files
    again = Conversation.restore(back)
    assert shown(again) == shown(conv)
    assert branches.describe(again) == branches.describe(conv)
    assert [im.label for im in again.stash] == ["Image 2"]
    branches.switch(again, 1, 0)
    assert shown(again) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
    assert [im.label for im in again.images] == ["Image 1", "Image 2"]
    # a version-1 file: no ids, no branches; the turns shown are the whole conversation
    v1 = {"format": "llava-app.conversation", "version": 1, "next_number": 2, "turns": [
        {"user": "q1", "assistant": "a1"}, {"user": "q2", "assistant": "a2"}],
        "images": [{"number": 1, "sha256": record.images[0].sha256, "width": 64, "height": 48, "turn": 1}]}
    old = ConversationRecord.from_json(v1)
    old.files = record.files
    conv1 = Conversation.restore(old)
    assert shown(conv1) == [("q1", "a1"), ("q2", "a2")]
    assert [t.images for t in conv1.turns] == [[], [1]]
    conv1.ask("q3")
    assert conv1.turns[-1].parent == conv1.turns[1].id


def test_undo_takes_back_the_question_with_its_other_answers_but_keeps_a_branch(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    service.regenerate(conv)
    list(service.stream_answer(conv, PARAMS))
    assert service.undo(conv) == "q3"
    assert shown(conv) == [("q1", "a1"), ("q2", "a2")] and conv.hidden == []
    # an edited question that has a branch beside it: undo takes the edit back and shows that branch
    say(service, backend, conv, "q3", "a3")
    service.edit(conv, 1, "q2 edited")
    list(service.stream_answer(conv, PARAMS))
    assert service.undo(conv) == "q2 edited"
    assert shown(conv) == [("q1", "a1"), ("q2", "a2"), ("q3", "a3")]
    assert conv.summary()["branches"][1]["count"] == 1


def test_a_copy_keeps_the_tree(chat, image_files):
    backend, service = chat
    conv = three_turns(chat, image_files)
    service.edit(conv, 1, "q2 edited")
    list(service.stream_answer(conv, PARAMS))
    twin = copy.deepcopy(conv)
    branches.switch(twin, 1, 0)
    assert shown(twin)[1] == ("q2", "a2") and shown(conv)[1][0] == "q2 edited"


def test_export_and_import_keep_the_branches_and_the_finetune_record_takes_the_branch_shown(chat, image_files,
                                                                                            tmp_path, store):
    from llava_app.chat.transfer import export_conversation, import_conversation
    from llava_app.storage.export import finetune_record

    backend, service = chat
    conv = three_turns(chat, image_files)
    service.edit(conv, 1, "q2 edited", remove=[2])
    list(service.stream_answer(conv, PARAMS))
    (tmp_path / "out").mkdir()
    path = export_conversation("json", conv, tmp_path / "out")
    back = import_conversation(path, store, max_images=8).conversation
    assert shown(back) == shown(conv) and branches.describe(back) == branches.describe(conv)
    branches.switch(back, 1, 0)
    assert shown(back)[1:] == [("q2", "a2"), ("q3", "a3")]
    assert [im.label for im in back.images] == ["Image 1", "Image 2"]
    record = finetune_record(conv.to_record())
    assert [m["content"] for m in record["messages"] if m["role"] == "user"] == ["Image 1: <image>\nq1", "q2 edited"]
    assert len(record["images"]) == 1
