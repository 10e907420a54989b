"""Branches on the local engine: an edited turn reuses the KV before it, a branch switched back to keeps its own.

Every answer is checked token for token against a from-scratch run (the processor on the whole
history, then generate), as in test_kvcache.py.
"""

from __future__ import annotations

import pytest
from conftest import TINY_FAMILIES
from unit.engine.test_kvcache import answer, ask, check, service_for, user_turn_start

QUESTIONS = ["What is in Image 1 ?", "And in Image 2 ?", "Which is larger ?", "Name a color .", "Why ?", "Sure ?"]


def six_turns(backend, photos):
    from llava_app.chat.conversation import Conversation

    service, conv = service_for(backend), Conversation()
    for k, question in enumerate(QUESTIONS):
        if k < 2:
            service.add_images(conv, [(str(photos[k]), photos[k].name)])
        ask(service, conv, question)
    return service, conv


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_editing_turn_3_of_6_prefills_only_from_turn_3_without_the_vision_tower(local_backend, photos, preset):
    backend = local_backend(preset)
    service, conv = six_turns(backend, photos)
    calls = backend.reuse.vision_calls
    service.edit(conv, 2, "How many colors ?")
    stats, msgs = answer(service, conv)
    check(backend, stats, msgs)
    start = user_turn_start(backend, msgs)  # where turn 3's user message begins
    assert start <= stats.reused_tokens < start + 6
    assert stats.images == 2 and stats.images_encoded == 0 and stats.image_feature_hits == 0
    assert backend.reuse.vision_calls == calls
    # the other branch's cache is kept beside the new one
    assert backend.reuse.kv.prefixes(conv.id) == 2

    # back to the first branch: its next question reads only the new question
    old_length = backend.reuse.kv.session_bytes(conv.id)
    service.switch_branch(conv, 2, 0)
    assert [t.user for t in conv.turns] == QUESTIONS
    stats, msgs = ask(service, conv, "And now ?")
    check(backend, stats, msgs)
    assert stats.prefilled_tokens < 25 < stats.reused_tokens and stats.images_encoded == 0
    assert old_length > 0 and backend.reuse.kv.nbytes <= backend.reuse.kv.budget

    # and back to the edited branch: the same
    service.switch_branch(conv, 2, 1)
    stats, msgs = ask(service, conv, "Is it red ?")
    check(backend, stats, msgs)
    assert stats.prefilled_tokens < 25 < stats.reused_tokens


def test_an_edit_that_adds_a_picture_encodes_only_that_picture(local_backend, photos):
    backend = local_backend("tiny-random")
    service, conv = six_turns(backend, photos)
    service.edit(conv, 2, "Compare with Image 3 .", files=[(str(photos[2]), photos[2].name)])
    stats, msgs = answer(service, conv)
    check(backend, stats, msgs)
    assert stats.images == 3 and stats.images_encoded == 1
    assert stats.reused_tokens >= user_turn_start(backend, msgs)


def test_regenerate_keeps_both_answers_kv(local_backend, photos):
    backend = local_backend("tiny-random")
    service, conv = six_turns(backend, photos)
    service.regenerate(conv)
    stats, msgs = answer(service, conv)
    check(backend, stats, msgs)
    assert stats.prefilled_tokens == 1
    service.switch_branch(conv, 5, 0)
    stats, msgs = ask(service, conv, "Really ?")
    check(backend, stats, msgs)
    assert stats.prefilled_tokens < 25


def test_a_session_keeps_a_bounded_number_of_prefixes(local_backend, photos):
    from llava_app.engine.local.prefixes import PER_SESSION

    backend = local_backend("tiny-random")
    service, conv = six_turns(backend, photos)
    for k in range(PER_SESSION + 2):
        service.edit(conv, 5, f"Sure {k} ?")
        answer(service, conv)
    assert backend.reuse.kv.prefixes(conv.id) == PER_SESSION
    service.forget(conv)
    assert conv.id not in backend.reuse.kv


def test_under_real_bpe_each_branch_keeps_the_ids_its_answers_were_written_in(local_backend, monkeypatch, request,
                                                                             tiny_model_path):
    """Answers written in byte-sized tokens (not how the tokenizer writes their text): a branch switched
    back to still reads only its new question, because its own recorded ids stand in for its answers."""
    from faithful_support import MIXED, SYSTEM, byte_ids, force_answers
    from unit.engine.test_faithful import real_or_skip, stored

    from llava_app.chat.conversation import Conversation
    from llava_app.chat.service import ChatService
    from llava_app.engine.base import GenerationParams

    preset = "tiny-faithful-llava"
    real_or_skip(tiny_model_path, preset)
    backend = local_backend(preset)
    tok, eot = backend.processor.tokenizer, backend.model.generation_config.eos_token_id
    force_answers(backend, monkeypatch, [byte_ids(tok, text) + [eot] for text in
                                         (MIXED, " The second, 深色 🌙.", " Third 😀.", " Edited 你好.", " Again.")])
    service, conv = ChatService(backend, backend.images, stream_interval=0.0), Conversation()
    s = stored(backend, "red", (64, 48))
    conv.add_image(s.sha256, s.path, s.width, s.height)

    def run():
        for _ in service.stream_answer(conv, GenerationParams(max_new_tokens=40), SYSTEM):
            pass
        return backend.last_run

    for question in ["What is in Image 1?", "Which one is darker?", "Why?"]:
        service.ask(conv, question)
        last = run()
    service.edit(conv, 1, "Which one is lighter?")
    edited = run()
    assert edited.reused_tokens > 576 and edited.images_encoded == 0
    service.switch_branch(conv, 1, 0)
    service.ask(conv, "Sure?")
    back = run()
    fresh = back.prompt_tokens - last.prompt_tokens - len(last.new_token_ids) + 1  # the new question's turn
    assert back.prefilled_tokens == fresh and back.images_encoded == 0
    backend.forget(conv.id)
