"""Multi-turn reuse: greedy answers with prefix KV reuse and cached image features are
token-identical to a from-scratch run (processor on everything + generate), for every edit."""

from __future__ import annotations

import pytest
from conftest import TINY_FAMILIES

MAX_NEW = 10
SYSTEM = "Answer briefly."


def service_for(backend):
    from llava_app.chat.service import ChatService

    return ChatService(backend, backend.images, stream_interval=0.0)


def reference(backend, messages, max_new=MAX_NEW) -> list[int]:
    """What the model answers without any reuse: the processor on the whole history, then generate."""
    import torch

    inputs, _ = backend.encode(messages)
    with torch.inference_mode():
        out = backend.model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def answer(service, conv, system=SYSTEM, max_new=MAX_NEW):
    """Stream the pending turn through the service; returns the engine's stats and the model's messages."""
    from llava_app.engine.base import GenerationParams

    messages = conv.messages(system)
    for _ in service.stream_answer(conv, GenerationParams(max_new_tokens=max_new), system):
        pass
    stats, answered = service.backend.last_run, conv.turns[-1].stats
    # What the page shows under the answer is what the engine did.
    assert (answered.prompt_tokens, answered.prefilled_tokens, answered.images_encoded) == \
        (stats.prompt_tokens, stats.prefilled_tokens, stats.images_encoded)
    assert answered.completion_tokens == len(stats.new_token_ids) and answered.ttft_s > 0
    return stats, messages


def ask(service, conv, question, system=SYSTEM, max_new=MAX_NEW):
    service.ask(conv, question)
    return answer(service, conv, system, max_new)


def check(backend, stats, messages, max_new=MAX_NEW):
    """Reuse must not change a single greedy token."""
    assert stats.new_token_ids == reference(backend, messages, max_new)
    assert stats.reused_tokens + stats.prefilled_tokens == stats.prompt_tokens


def user_turn_start(backend, messages) -> int:
    """Token position where the last user message begins (the first token an Undo changes)."""
    head = messages[:-1]
    text = backend.processor.apply_chat_template(
        [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
         for m in head], tokenize=False)
    shas = [p["ref"].sha256 for m in head for p in m["content"] if p["type"] == "image"]
    return int(backend.reuse.layout(text, shas)[0].numel())


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_follow_ups_feed_only_new_tokens_and_answer_as_without_reuse(local_backend, photos, preset):
    from llava_app.chat.conversation import Conversation

    backend = local_backend(preset)
    service, conv = service_for(backend), Conversation()
    service.add_images(conv, [(str(p), p.name) for p in photos[:2]])
    first, msgs = ask(service, conv, "Compare Image 1 and Image 2")
    check(backend, first, msgs)
    assert first.reused_tokens == 0 and first.images_encoded == 2
    for question in ["Which one is red ?", "And the blue one ?", "Describe the colors again ."]:
        stats, msgs = ask(service, conv, question)
        check(backend, stats, msgs)
        assert stats.images_encoded == 0 and stats.image_feature_hits == 0  # the images are inside the prefix
        # Everything up to the new question is reused: the last answer's tokens included.
        assert stats.prefilled_tokens < 25 < stats.reused_tokens


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_undo_regenerate_system_prompt_and_image_edits_fall_back_to_the_matching_prefix(local_backend, photos, preset):
    from llava_app.chat.conversation import Conversation

    backend = local_backend(preset)
    service, conv = service_for(backend), Conversation()
    service.add_images(conv, [(str(p), p.name) for p in photos[:2]])
    ask(service, conv, "What is in Image 1 ?")
    ask(service, conv, "And in Image 2 ?")
    stats, msgs = ask(service, conv, "is it big ?")

    # Undo, then a different question: the cache is cropped to where the undone turn began.
    assert service.undo(conv) == "is it big ?"
    stats, msgs = ask(service, conv, "is it small ?")
    check(backend, stats, msgs)
    start = user_turn_start(backend, msgs)
    assert start <= stats.reused_tokens < start + 6 and stats.images_encoded == 0  # "user\nis it" still match

    # Regenerate: the same prompt, read from the cache except its last token; the same greedy answer.
    before = conv.turns[-1].assistant
    service.regenerate(conv)
    stats, msgs = answer(service, conv)
    check(backend, stats, msgs)
    assert stats.prefilled_tokens == 1 and conv.turns[-1].assistant == before

    # An edited system prompt changes the prompt's first lines: almost nothing is reusable,
    # but the images' features are cached.
    stats, msgs = ask(service, conv, "Tell me more .", system="Answer in detail.")
    check(backend, stats, msgs)
    assert stats.reused_tokens < 8 and stats.images_encoded == 0 and stats.image_feature_hits == 2

    # Removing Image 1 changes the first user message at its label: reuse stops there.
    image1_label_pos = user_turn_start(backend, msgs[:2])  # system message, then the first user turn
    service.remove_images(conv, [1])
    stats, msgs = ask(service, conv, "What is left ?", system="Answer in detail.")
    check(backend, stats, msgs)
    assert image1_label_pos <= stats.reused_tokens < image1_label_pos + 8
    assert stats.images == 1 and stats.images_encoded == 0

    # A new image mid-chat joins the new turn: only it goes through the vision tower.
    service.add_images(conv, [(str(photos[2]), photos[2].name)])
    stats, msgs = ask(service, conv, "And Image 3 ?", system="Answer in detail.")
    check(backend, stats, msgs)
    assert stats.images_encoded == 1 and stats.reused_tokens > image1_label_pos + 20


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_a_stopped_partial_answer_in_the_history_keeps_the_cache_correct(local_backend, photos, preset):
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import GenerationParams

    backend = local_backend(preset)
    service, conv = service_for(backend), Conversation()
    service.add_images(conv, [(str(photos[0]), photos[0].name)])
    service.ask(conv, "Tell a long story about Image 1")
    stream = service.stream_answer(conv, GenerationParams(max_new_tokens=200), SYSTEM)
    for i, _ in enumerate(stream):
        if i == 3:
            service.stop(conv)
    stream.close()
    assert conv.turns[-1].stopped and 0 < len(backend.last_run.new_token_ids) < 200
    stats, msgs = ask(service, conv, "Go on .")
    check(backend, stats, msgs)
    assert stats.reused_tokens > 0


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_evicted_sessions_reprefill_with_cached_image_features(local_backend, photos, preset):
    from llava_app.chat.conversation import Conversation

    def first_turn(service, images):
        conv = Conversation()
        service.add_images(conv, [(str(p), p.name) for p in images])
        ask(service, conv, "Compare Image 1 and Image 2")
        return conv

    # A budget that holds either conversation's KV but not both.
    probe = local_backend(preset)
    sizes = [probe.reuse.kv.session_bytes(first_turn(service_for(probe), imgs).id) for imgs in (photos[:2], photos[2:])]
    backend = local_backend(preset, kv_cache_bytes=max(sizes) + min(sizes) // 2)

    service = service_for(backend)
    a, b = Conversation(), Conversation()
    service.add_images(a, [(str(p), p.name) for p in photos[:2]])
    service.add_images(b, [(str(p), p.name) for p in photos[2:]])
    calls = backend.reuse.vision_calls
    ask(service, a, "Compare Image 1 and Image 2")
    assert backend.reuse.kv.keys() == [a.id]
    ask(service, b, "Compare Image 1 and Image 2")
    assert backend.reuse.kv.keys() == [b.id]  # a was the least recently used: evicted
    assert backend.reuse.kv.nbytes <= backend.reuse.kv.budget
    stats, msgs = ask(service, a, "Which one is darker ?")
    check(backend, stats, msgs)
    assert stats.reused_tokens == 0 and stats.images_encoded == 0 and stats.image_feature_hits == 2
    # Each picture went through the vision tower once: a's two in one call, b's two in another.
    assert backend.reuse.vision_calls - calls == 2

    # forget() frees a session at once (closed tab, new chat).
    assert a.id in backend.reuse.kv
    service.forget(a)
    assert a.id not in backend.reuse.kv
    stats, msgs = ask(service, a, "Still there ?")
    check(backend, stats, msgs)
    assert stats.reused_tokens == 0


def test_without_a_kv_budget_every_turn_is_read_again_with_the_same_answers(local_backend, photos):
    from llava_app.chat.conversation import Conversation

    backend = local_backend("tiny-random", kv_cache_bytes=0)
    service, conv = service_for(backend), Conversation()
    service.add_images(conv, [(str(photos[0]), photos[0].name)])
    for q in ["What is this ?", "Are you sure ?"]:
        stats, msgs = ask(service, conv, q)
        check(backend, stats, msgs)
        assert stats.reused_tokens == 0
    assert len(backend.reuse.kv) == 0 and stats.images_encoded == 0 and stats.image_feature_hits == 1


def test_the_feature_cache_encodes_an_image_once_per_model_and_is_bounded(local_backend, photos):
    from llava_app.chat.conversation import Conversation

    backend = local_backend("tiny-random-llava-next", feature_cache_bytes=10**7)
    service = service_for(backend)
    reuse = backend.reuse
    a = Conversation()
    service.add_images(a, [(str(photos[0]), photos[0].name)])
    ask(service, a, "What is this ?")
    calls, hits = reuse.vision_calls, reuse.features.hits
    b = Conversation()  # the same picture in another session: no vision call
    service.add_images(b, [(str(photos[0]), photos[0].name)])
    stats, msgs = ask(service, b, "What is this ?")
    check(backend, stats, msgs)
    assert reuse.vision_calls == calls and reuse.features.hits == hits + 1 and stats.image_feature_hits == 1

    # Bounded: room for one image's features (LLaVA-1.5 geometry: every image has the same size).
    one = 16 * backend.model.config.text_config.hidden_size * 4
    small = local_backend("tiny-random", feature_cache_bytes=int(one * 1.5), kv_cache_bytes=0)
    service = service_for(small)
    c = Conversation()
    service.add_images(c, [(str(p), p.name) for p in photos[:2]])
    stats, msgs = ask(service, c, "Compare them .")
    check(small, stats, msgs)
    assert stats.images_encoded == 2 and len(small.reuse.features) == 1 and small.reuse.features.evictions >= 1
    assert small.reuse.features.nbytes <= small.reuse.features.budget
    stats, _ = ask(service, c, "Again .")
    assert stats.images_encoded == 1 and stats.image_feature_hits == 1  # the first was evicted, the second kept


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_prompt_layout_matches_the_processor(local_backend, photos, preset):
    """The ids built from cached placeholder counts equal the processor's own, for 0 to 4 images."""
    from PIL import Image

    backend = local_backend(preset)
    store = backend.images
    refs = [store.put(Image.open(p).convert("RGB")) for p in photos]
    for k in range(5):
        parts = [{"type": "text", "text": f"Image {i + 1}:"} if j == 0 else {"type": "image"}
                 for i in range(k) for j in range(2)]
        msgs = [{"role": "user", "content": parts + [{"type": "text", "text": "What do you see ?"}]}]
        text = backend.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        expected = backend.processor(text=text, images=[store.open(r.sha256) for r in refs[:k]] or None,
                                     return_tensors="pt")["input_ids"][0]
        ids, spans, *_ = backend.reuse.layout(text, [r.sha256 for r in refs[:k]])
        assert ids.tolist() == expected.tolist()
        assert [s.sha256 for s in spans] == [r.sha256 for r in refs[:k]]
        assert all((ids[s.start:s.stop] == backend.reuse.image_token_id).all() for s in spans)
    assert backend.reuse._prompt_ids.fast is True  # the placeholder ids were repeated, not tokenised each
    # The engine's prompt count (context fitting, the page's panel) is the processor's.
    conv_msgs = [{"role": "user", "content": [p for i, r in enumerate(refs) for p in (
        {"type": "text", "text": f"Image {i + 1}:"}, {"type": "image", "ref": _Ref(r.sha256, f"Image {i + 1}")})]
        + [{"type": "text", "text": "Compare them ."}]}]
    fast, slow = backend.prompt_info(conv_msgs), backend.encode(conv_msgs)[1]
    assert (fast.n_tokens, fast.n_image_tokens, fast.text) == (slow.n_tokens, slow.n_image_tokens, slow.text)


class _Ref:
    """The two fields of an ``ImageRef`` the engine reads."""

    def __init__(self, sha256, label):
        self.sha256, self.label = sha256, label


def test_common_prefix_never_reuses_a_different_picture_or_half_an_image():
    import torch

    from llava_app.engine.local.prefixes import ImageSpan, common_prefix

    img = 9
    ids = torch.tensor([1, 2, img, img, img, 3, 4, 5])
    spans = (ImageSpan(2, 5, "a"),)
    assert common_prefix(ids, spans, ids, spans) == 8
    # Same ids, another picture in the same place: only the text before it is reusable.
    assert common_prefix(ids, spans, ids, (ImageSpan(2, 5, "b"),)) == 2
    # The ids diverge inside the image run (a picture with fewer tokens): back to its start.
    other = torch.tensor([1, 2, img, img, 3, 4])
    assert common_prefix(ids, spans, other, (ImageSpan(2, 4, "a"),)) == 2
    # The ids diverge after the image: the image is reused.
    later = torch.tensor([1, 2, img, img, img, 3, 7, 7, 7])
    assert common_prefix(ids, spans, later, spans) == 6
    assert common_prefix(ids[:0], (), ids, spans) == 0


def test_byte_lru_evicts_least_recently_used_first_and_refuses_what_cannot_fit():
    from llava_app.engine.local.lru import ByteLRU

    evicted = []
    lru = ByteLRU(100, on_evict=lambda k, v: evicted.append(k))
    assert lru.put("a", 1, 40) and lru.put("b", 2, 40)
    assert lru.get("a") == 1  # now b is the least recently used
    assert lru.put("c", 3, 40)
    assert evicted == ["b"] and lru.keys() == ["a", "c"] and lru.nbytes == 80
    assert not lru.put("huge", 4, 101) and "huge" not in lru
    assert lru.pop("a") == 1 and lru.nbytes == 40
    assert (lru.hits, lru.misses) == (1, 0) and lru.get("zzz") is None and lru.misses == 1


def test_cache_budgets_are_config_flags(monkeypatch):
    from llava_app.config import parse_config

    config = parse_config(["--kv-cache-mb", "64", "--feature-cache-mb", "0"], env={})
    assert (config.kv_cache_mb, config.feature_cache_mb) == (64.0, 0.0)
    assert parse_config([], env={"LLAVA_APP_KV_CACHE_MB": "0"}).kv_cache_mb == 0.0
    with pytest.raises(SystemExit, match="kv-cache-mb"):
        parse_config(["--kv-cache-mb", "-1"], env={})


def test_a_prompt_the_engine_cannot_lay_out_is_read_whole_by_the_processor(local_backend, photos, monkeypatch):
    from llava_app.chat.conversation import Conversation

    backend = local_backend("tiny-random-llava-next", kv_cache_bytes=10**8)
    service, conv = service_for(backend), Conversation()
    service.add_images(conv, [(str(photos[1]), photos[1].name)])
    ask(service, conv, "What is this ?")
    assert conv.id in backend.reuse.kv

    def refuse(*args, **kwargs):
        raise ValueError("an unusual processor")

    monkeypatch.setattr(backend.reuse, "layout", refuse)
    stats, msgs = ask(service, conv, "Are you sure ?")
    check(backend, stats, msgs)
    assert stats.reused_tokens == 0 and stats.images_encoded == 1 and conv.id not in backend.reuse.kv


def test_prompt_ids_repeat_the_placeholder_id_and_fall_back_where_the_tokenizer_reads_them_otherwise(local_backend):
    from llava_app.engine.local.prompt_ids import PromptIds

    backend = local_backend()
    p = backend.processor
    text = p.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi ?"}]}],
                                 add_generation_prompt=True, tokenize=False)
    repl = [p.image_token * 7]
    ids = PromptIds(p, backend.reuse._kwargs["text"], p.image_token, backend.reuse.image_token_id)
    assert ids.fast is None  # checked on the first prompt with an image
    assert ids(text, repl) == ids.processor_way(text, repl) and ids.fast is True
    assert ids(text, repl).count(backend.reuse.image_token_id) == 7
    odd = PromptIds(p, backend.reuse._kwargs["text"], p.image_token, backend.reuse.image_token_id)
    odd.processor_way = lambda text, replacements: [1, 2, 3]  # a tokenizer that reads the repeats differently
    assert odd(text, repl) == [1, 2, 3] and odd.fast is False
    assert odd(text, repl) == [1, 2, 3]  # the processor's way from then on
