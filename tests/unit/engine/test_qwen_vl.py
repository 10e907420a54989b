"""Qwen2.5-VL and Qwen3-VL in the local engine, on their faithful tiny models: the checkpoints' prompts, vision
token counts from the processor's own resize rule, streaming Chinese, the real end of turn, and multimodal rotary
positions (M-RoPE) kept right by prefix reuse, cached features, edit points and batched decoding.

Also the batched sampler's use of a checkpoint's ``generation_config`` (any family: checked on ``tiny-random``).
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from faithful_support import MIXED, SYSTEM, byte_ids, force_answers, text_of
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.parts import ImageRef
from llava_app.chat.service import ChatService
from llava_app.engine.base import ChatRequest, GenerationParams, TextDelta

QWEN = ["tiny-faithful-qwen2.5-vl", "tiny-faithful-qwen3-vl"]
# The checkpoints' ids (their tokenizer.json / config.json): what a prompt built here must contain.
IDS = {"<|im_end|>": 151645, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
       "<|video_pad|>": 151656, "<|box_start|>": 151648, "<|quad_end|>": 151651, "<tool_call>": 151657}
PATCH = {"tiny-faithful-qwen2.5-vl": 14, "tiny-faithful-qwen3-vl": 16}
PICTURE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(params=QWEN)
def preset(request, tiny_model_path):
    from test_faithful import real_or_skip

    real_or_skip(tiny_model_path, request.param)
    return request.param


def stored(backend, color, size):
    return backend.images.put(Image.new("RGB", size, color))


def add(backend, conv, color, size):
    s = stored(backend, color, size)
    conv.add_image(s.sha256, s.path, s.width, s.height)


def expected_tokens(preset: str, width: int, height: int, min_pixels: int, max_pixels: int) -> int:
    """The vision tokens of a picture: the processor's own smart_resize to multiples of patch x merge, between the
    pixel bounds, then one token per 2x2 patches."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    factor = PATCH[preset] * 2
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // factor) * (w // factor)


def test_the_prompt_is_the_checkpoints_and_each_picture_costs_its_own_tokens(preset, local_backend):
    backend = local_backend(preset)
    tok = backend.processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in IDS} == IDS
    assert backend.processor.image_token == "<|image_pad|>"
    conv = Conversation()
    add(backend, conv, "red", (64, 48))
    add(backend, conv, "navy", (40, 90))
    conv.ask("Compare Image 1 and Image 2")
    conv.answer("你好 😀.")
    conv.ask("Which one?")
    info = backend.prompt_info(conv.messages(SYSTEM))
    assert info.text == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nImage 1:{PICTURE}Image 2:"
                         f"{PICTURE}Compare Image 1 and Image 2<|im_end|>\n<|im_start|>assistant\n你好 😀.<|im_end|>\n"
                         "<|im_start|>user\nWhich one?<|im_end|>\n<|im_start|>assistant\n")
    # No system prompt: Qwen2.5-VL's template writes its default one, Qwen3-VL's none.
    bare = backend.render([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if "2.5" in preset else ""
    assert bare == f"{default}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    pictures = [Image.open(p["ref"].path).convert("RGB")
                for m in conv.messages(SYSTEM) for p in m["content"] if p["type"] == "image"]
    reference = backend.processor(text=info.text, images=pictures, return_tensors="pt")["input_ids"]
    assert info.n_tokens == reference.shape[1]
    assert info.n_image_tokens == int((reference == IDS["<|image_pad|>"]).sum())

    size = backend.processor.image_processor.size
    bounded = local_backend(preset, image_pixels="20000:60000")
    for width, height in [(640, 480), (1920, 1080), (100, 900), (30, 30)]:
        s = stored(backend, "green", (width, height))
        ref = {"role": "user", "content": [{"type": "image", "ref": ImageRef(9, s.sha256, s.path, s.width,
                                                                              s.height, 0)}]}
        n = backend.prompt_info([ref]).n_image_tokens
        assert n == expected_tokens(preset, width, height, size["shortest_edge"], size["longest_edge"])
        assert bounded.prompt_info([ref]).n_image_tokens == expected_tokens(preset, width, height, 20000, 60000)
        if (width, height) == (640, 480) and "2.5" in preset:
            assert n == 391  # grid 34 x 46, as the real processor gives
    assert backend.image_resolution() is None  # pictures are read at their own size: stored as sent


def test_streamed_chinese_never_splits_a_character_and_stops_at_im_end(preset, local_backend, monkeypatch):
    backend = local_backend(preset)
    tok = backend.processor.tokenizer
    eot = IDS["<|im_end|>"]
    assert backend.model.generation_config.eos_token_id == [eot, 151643]
    forced = byte_ids(tok, MIXED) + [eot]
    force_answers(backend, monkeypatch, [forced, forced])
    conv = Conversation()
    add(backend, conv, "red", (64, 48))
    conv.ask("Say hello")
    request = ChatRequest(conv.messages(SYSTEM), GenerationParams(max_new_tokens=64), session_id=conv.id)
    chunks = [c for c in (text_of(e) for e in backend.stream(request)) if c]
    assert len(chunks) > 3
    shown = ""
    for chunk in chunks:
        shown += chunk
        assert "\ufffd" not in shown, chunks
    assert backend.last_run.new_token_ids == forced  # ended by the real end-of-turn token
    assert shown == MIXED and "<|" not in shown
    service = ChatService(backend, backend.images, stream_interval=0.0)
    conv2 = Conversation()
    service.ask(conv2, "Say hello")
    texts = list(service.stream_answer(conv2, GenerationParams(max_new_tokens=64), SYSTEM))
    assert texts[-1] == MIXED == conv2.turns[-1].assistant


def _answer(backend, conv, session: str | None = None, new_branch: bool = False, tokens: int = 6):
    request = ChatRequest(conv.messages(SYSTEM), GenerationParams(max_new_tokens=tokens),
                          session_id=session or conv.id, new_branch=new_branch)
    text = "".join(e.text for e in backend.stream(request) if isinstance(e, TextDelta))
    return text, backend.last_run


def _generate(backend, conv, prompt_ids, tokens: int = 6) -> list[int]:
    """transformers' own generate on the whole prompt (the processor's pixels; its own rotary positions)."""
    import torch

    pictures = [Image.open(p["ref"].path).convert("RGB")
                for m in conv.messages(SYSTEM) for p in m["content"] if p["type"] == "image"]
    inputs = dict(backend.processor.image_processor(pictures, return_tensors="pt")) if pictures else {}
    ids = prompt_ids.view(1, -1)
    backend.model.model.rope_deltas = None
    with torch.inference_mode():
        out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     mm_token_type_ids=(ids == IDS["<|image_pad|>"]).int(), **inputs,
                                     do_sample=False, temperature=None, top_p=None, top_k=None,
                                     max_new_tokens=tokens)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_answers_are_generates_with_reuse_edits_and_batching(preset, local_backend):
    backend = local_backend(preset)
    conv = Conversation()
    add(backend, conv, "red", (64, 48))
    add(backend, conv, "navy", (40, 90))
    runs = []
    for question in ["Compare Image 1 and Image 2", "Which one is darker?", "And Image 3?"]:
        if question == "And Image 3?":
            add(backend, conv, "green", (120, 30))  # added mid-chat: read after the reused prefix
        conv.ask(question)
        text, stats = _answer(backend, conv)
        assert stats.new_token_ids == _generate(backend, conv, stats.prompt_ids)
        runs.append(stats)
        conv.answer(text)
    assert runs[1].prefilled_tokens < 25 and runs[2].prefilled_tokens < runs[2].prompt_tokens - runs[1].prompt_tokens
    assert runs[2].images_encoded == 1
    # One answer at a time through generate (ZeroGPU's way), its prefix reused too: the same answers.
    single, replay = local_backend(preset, batch=False), Conversation()
    for im in conv.images[:2]:
        replay.add_image(im.sha256, im.path, im.width, im.height)
    for turn, stats in zip(conv.turns[:2], runs[:2], strict=True):
        replay.ask(turn.user)
        _, alone = _answer(single, replay)
        assert alone.new_token_ids == stats.new_token_ids
        replay.answer(turn.assistant)
    assert single.scheduler is None and alone.prefilled_tokens == runs[1].prefilled_tokens
    # An edit of turn 2 (a new branch) reads again only from turn 2; its answer is generate's.
    edited = Conversation()
    for im in conv.images[:2]:
        edited.add_image(im.sha256, im.path, im.width, im.height)
    edited.ask(conv.turns[0].user)
    edited.answer(conv.turns[0].assistant)
    edited.ask("Which one is lighter?")
    _, branch = _answer(backend, edited, session=conv.id, new_branch=True)
    kept, ids = runs[2].prompt_ids.tolist(), branch.prompt_ids.tolist()
    common = next(i for i, (a, b) in enumerate(zip(kept, ids, strict=False)) if a != b)  # "Which one is " ...
    assert branch.reused_tokens == common > runs[0].prompt_tokens and branch.images_encoded == 0
    assert branch.new_token_ids == _generate(backend, edited, branch.prompt_ids)
    # Back on the first branch (its KV still kept): a follow-up reads only itself.
    conv.ask("Are you sure?")
    _, back = _answer(backend, conv)
    assert back.prefilled_tokens < 25 and back.new_token_ids == _generate(backend, conv, back.prompt_ids)
    # Three conversations decoded together answer as each does alone.
    convs = []
    for k, size in enumerate([(60, 40), (80, 50), (100, 60)]):
        c = Conversation()
        add(backend, c, ("red", "olive", "teal")[k], size)
        c.ask(f"Question {k}: what is it?")
        convs.append(c)
    alone = [_answer(backend, c, session=f"{c.id}-alone")[0] for c in convs]
    together: list[str | None] = [None] * 3

    def ask(i):
        together[i] = _answer(backend, convs[i], session=f"{convs[i].id}-batched")[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == alone and len(set(alone)) > 1
    assert backend.scheduler is not None and backend.scheduler.peak_rows >= 2


def test_batched_greedy_answers_follow_the_checkpoints_generation_config(local_backend, tiny_model_path, tmp_path):
    """Suppressed and bad words, a repetition penalty, no repeated n-grams and a minimum length, from the model's
    own generation_config: the engine's batched answer is generate's, not the raw argmax's."""
    import torch

    from llava_app.engine.local.backend import LocalBackend

    plain = local_backend("tiny-random")
    conv = Conversation()
    add(plain, conv, "red", (64, 48))
    conv.ask("Describe the picture")
    _, raw = _answer(plain, conv, tokens=12)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path("tiny-random"), folder)
    settings = json.loads((folder / "generation_config.json").read_text())
    settings.update(suppress_tokens=[raw.new_token_ids[0]], bad_words_ids=[[raw.new_token_ids[1]]],
                    repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4,
                    eos_token_id=[settings["eos_token_id"], raw.new_token_ids[2]])
    (folder / "generation_config.json").write_text(json.dumps(settings))
    backend = LocalBackend(str(folder), plain.images, device="cpu")
    try:
        assert backend.scheduler is not None
        _, stats = _answer(backend, conv, tokens=12)
        request = ChatRequest(conv.messages(SYSTEM), GenerationParams(max_new_tokens=12))
        ids = stats.prompt_ids.view(1, -1)
        inputs, _ = backend.encode(conv.messages(SYSTEM))
        with torch.inference_mode():
            out = backend.model.generate(**inputs, **backend.generation_kwargs(request))
        assert inputs["input_ids"].tolist() == ids.tolist()
        assert stats.new_token_ids == out[0, ids.shape[1]:].tolist()
        assert stats.new_token_ids != raw.new_token_ids[:len(stats.new_token_ids)]
        assert raw.new_token_ids[0] not in stats.new_token_ids and len(stats.new_token_ids) >= 4
    finally:
        backend.close()


def test_4_and_8_bit_keep_the_vision_tower_and_lm_head_whole(preset, local_backend):
    from llava_app.engine.local.models import quantization_skip_modules

    model = local_backend(preset).model
    names = {name for name, _ in model.named_modules()}
    skip = quantization_skip_modules(model.config)
    assert set(skip) <= names and "model.visual.merger" in names
    assert not any(n.startswith(s) for n in names if n.startswith("model.language_model.layers") for s in skip)


def test_image_pixels_flag_is_checked():
    from llava_app.config import Config, pixel_bounds, validate

    assert pixel_bounds("") == (None, None)
    assert pixel_bounds("1003520") == (None, 1003520)
    assert pixel_bounds("200_704:1003520") == (200704, 1003520)
    for bad in ("abc", "5:2", "0", "1:2:3"):
        with pytest.raises(ValueError):
            pixel_bounds(bad)
        with pytest.raises(SystemExit, match="--image-pixels"):
            validate(Config(image_pixels=bad))
