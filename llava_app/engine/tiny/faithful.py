"""Tiny models that speak like the real checkpoints: ``--model tiny-faithful-*``.

Each matches its reference checkpoint in everything but width, depth and weights (what it copies:
``presets.FaithfulSpec``): the real tokenizer (``real_tokenizers.py``), the real special and image tokens
with their ids, the checkpoint's chat template, and its image geometry (image size, patch, anyres grids),
so prompts, token counts, BPE re-tokenisation, streaming of multi-byte characters and end-of-turn tokens
behave as with the real model. Where the vocabulary files are missing they fall back to the word-level tokenizer of
``words.py`` and say so (``tiny_model.json``: ``"tokenizer": "word-level fallback: ..."``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llava_app.engine.local.processors import record_stock_processor_class
from llava_app.engine.tiny.presets import FAITHFUL_PRESETS, FaithfulSpec
from llava_app.engine.tiny.words import build_tokenizer

log = logging.getLogger(__name__)

FAITHFUL_VERSION = "f5"  # bump when the recipe changes; old folders are rebuilt

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def builder_version(preset: str) -> str:
    """The recipe's version, and whether the real tokenizer could be used (a fallback build is redone
    once the vocabulary is there)."""
    from llava_app.engine.tiny.real_tokenizers import unavailable_reason

    real = unavailable_reason(FAITHFUL_PRESETS[preset].vocab) is None
    return f"{FAITHFUL_VERSION}-{'real' if real else 'fallback'}"


def model_info(path: str | Path) -> dict:
    """What ``tiny_model.json`` says about a built model (reference, tokenizer, ...)."""
    return json.loads((Path(path) / "tiny_model.json").read_text())


def _tokenizer(spec: FaithfulSpec):
    """``(tokenizer, description)``: the real one, or the word-level fallback with the reason."""
    from llava_app.engine.tiny import real_tokenizers

    reason = real_tokenizers.unavailable_reason(spec.vocab)
    if reason is None:
        if spec.vocab == "qwen2":
            tok = real_tokenizers.qwen2_tokenizer(list(spec.added_tokens), plain=list(spec.plain_tokens))
            return tok, "qwen2 (llama.cpp GGUF vocabulary)"
        tok = real_tokenizers.llama_tokenizer(list(spec.added_tokens), pad_token=spec.pad_token)
        return tok, "llama-spm (llama.cpp GGUF vocabulary)"
    log.warning("%s: the real tokenizer is not available (%s); using the word-level one", spec.reference, reason)
    tok = build_tokenizer()
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in spec.added_tokens], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.plain_tokens])
    return tok, f"word-level fallback: {reason}"


def end_of_turn_id(spec: FaithfulSpec, tok) -> int:
    """The id that ends an answer: the checkpoint's end-of-turn token (the fallback's eos if it lacks it)."""
    return tok.get_vocab().get(spec.end_of_turn, tok.eos_token_id)


QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
#: the checkpoints' M-RoPE split of a head's 64 frequency pairs: temporal, height, width
QWEN_MROPE = {"qwen2_5_vl": (16, 24, 24), "qwen3_vl": (24, 20, 20)}


def _mrope_section(real: tuple[int, ...], pairs: int) -> list[int]:
    """The checkpoint's split scaled to a head of ``pairs`` frequency pairs (each part at least one)."""
    section = [max(1, round(x * pairs / sum(real))) for x in real]
    section[-1] = pairs - sum(section[:-1])
    return section


def _qwen_config(spec: FaithfulSpec, tok, context_length: int):
    """Qwen2.5-VL / Qwen3-VL: the checkpoint's token ids, patch and merge sizes, M-RoPE (its split of the frequency
    pairs scaled to the tiny head; Qwen3-VL's interleaved), a two-block vision tower (Qwen3-VL: one deepstack layer)."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = {"vocab_size": max(spec.vocab_size, len(tok)), "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_hidden * 2, "num_hidden_layers": spec.text_layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": context_length,
            "bos_token_id": 151643, "eos_token_id": end_of_turn_id(spec, tok), "pad_token_id": tok.pad_token_id,
            "tie_word_embeddings": spec.tie_embeddings}
    head = spec.text_hidden // 4
    section = _mrope_section(QWEN_MROPE[spec.family], head // 2)
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4,
              "out_hidden_size": spec.text_hidden, "patch_size": spec.patch_size,
              "spatial_merge_size": spec.merge_size, "temporal_patch_size": 2}
    if spec.family == "qwen2_5_vl":
        text["rope_scaling"] = {"type": "mrope", "mrope_section": section}
        vision.update(window_size=112, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec.tie_embeddings, **ids)
    text.update(head_dim=head, rope_scaling={"rope_type": "default", "mrope_section": section,
                                             "mrope_interleaved": True})
    vision.update(num_position_embeddings=2304, deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec.tie_embeddings, **ids)


def _configs(spec: FaithfulSpec, tok, context_length: int):
    """The model config for ``spec`` around tokenizer ``tok``."""
    from transformers import LlavaConfig, LlavaNextConfig, LlavaOnevisionConfig

    if spec.family in QWEN_FAMILIES:
        return _qwen_config(spec, tok, context_length)
    image_id = tok.convert_tokens_to_ids("<image>")
    text = {
        "model_type": "qwen2" if spec.vocab == "qwen2" else "llama",
        "vocab_size": max(spec.vocab_size, len(tok)), "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_hidden * 2, "num_hidden_layers": spec.text_layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": context_length,
        "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
        "eos_token_id": end_of_turn_id(spec, tok), "tie_word_embeddings": spec.tie_embeddings,
    }
    vision = {"model_type": spec.vision, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": spec.image_size, "patch_size": spec.patch_size}
    if spec.vision == "siglip_vision_model":
        vision["vision_use_head"] = False
    common = {"vision_config": vision, "text_config": text, "image_token_index": image_id,
              "vision_feature_select_strategy": spec.select_strategy, "vision_feature_layer": spec.feature_layer}
    if spec.family == "llava":
        return LlavaConfig(**common, image_seq_length=(spec.image_size // spec.patch_size) ** 2)
    if spec.family == "llava_next":
        return LlavaNextConfig(**common, image_grid_pinpoints=spec.pinpoints,
                               image_seq_length=(spec.image_size // spec.patch_size) ** 2)
    return LlavaOnevisionConfig(**common, image_grid_pinpoints=spec.pinpoints,
                                video_token_index=tok.convert_tokens_to_ids("<video>"),
                                vision_aspect_ratio="anyres_max_9")


def _processor(spec: FaithfulSpec, tok):
    """The checkpoint's processor: image processor geometry, placeholder expansion, chat template."""
    from transformers import LlavaNextProcessor, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if spec.family in QWEN_FAMILIES:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from llava_app.engine.local.processors import STOCK_PROCESSORS, make_image_only_processor

        mean, std = (CLIP_MEAN, CLIP_STD) if spec.family == "qwen2_5_vl" else ([0.5] * 3, [0.5] * 3)
        images = Qwen2VLImageProcessorPil(patch_size=spec.patch_size, merge_size=spec.merge_size,
                                          temporal_patch_size=2, image_mean=mean, image_std=std,
                                          size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels})
        return make_image_only_processor(STOCK_PROCESSORS[spec.family], images, tok, chat_template=spec.template)
    side = spec.image_size
    extra = {"patch_size": spec.patch_size, "vision_feature_select_strategy": spec.select_strategy,
             "chat_template": spec.template}
    if spec.family == "llava" and spec.vision == "clip_vision_model":
        images = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                       image_mean=CLIP_MEAN, image_std=CLIP_STD)
        return LlavaProcessor(image_processor=images, tokenizer=tok, num_additional_image_tokens=1, **extra)
    if spec.family == "llava":  # SigLIP has no CLS token: 729 tokens per image
        images = SiglipImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3)
        return LlavaProcessor(image_processor=images, tokenizer=tok, num_additional_image_tokens=0, **extra)
    if spec.family == "llava_next":
        images = LlavaNextImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                            image_grid_pinpoints=spec.pinpoints, image_mean=CLIP_MEAN,
                                            image_std=CLIP_STD)
        return LlavaNextProcessor(image_processor=images, tokenizer=tok, num_additional_image_tokens=1, **extra)
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from llava_app.engine.local.processors import make_image_only_onevision_processor

    images = LlavaOnevisionImageProcessorPil(size={"height": side, "width": side}, image_grid_pinpoints=spec.pinpoints,
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return make_image_only_onevision_processor(images, tok, num_image_tokens=(side // spec.patch_size) ** 2,
                                               vision_feature_select_strategy=spec.select_strategy,
                                               vision_aspect_ratio="anyres_max_9", chat_template=spec.template)


def _randomise(model, tok, spec: FaithfulSpec) -> None:
    """Random but not degenerate weights (as in ``build.py``); no special token is ever likely.

    The rows of the output layer for special tokens (end of turn, image, ...) are zeroed, so random
    answers run to ``max_new_tokens`` and never contain a placeholder; tests that need the end of turn
    force it.
    """
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.3)
        head = model.get_output_embeddings()
        if not spec.tie_embeddings:
            head.weight.normal_(0.0, 1.0)
        for name, weight in model.named_parameters():
            if "language_model" in name and weight.dim() == 2 and "embed" not in name:
                weight.normal_(0.0, 0.2)
        for token_id in tok.all_special_ids:
            head.weight[token_id].zero_()
        head.weight[len(tok):].zero_()  # padding rows past the tokenizer


def build_faithful(preset: str, out: Path, context_length: int | None = None) -> None:
    """Build the faithful tiny model ``preset`` into the folder ``out``."""
    import torch
    from transformers import AutoModelForImageTextToText

    spec = FAITHFUL_PRESETS[preset]
    tok, described = _tokenizer(spec)
    if described.startswith("word-level"):
        tok.chat_template = spec.template
    config = _configs(spec, tok, int(context_length or spec.context_length))
    torch.manual_seed(0)  # the same weights on every machine
    model = AutoModelForImageTextToText.from_config(config)
    model.eval()
    _randomise(model, tok, spec)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    for key, value in spec.generation:  # the checkpoint's own sampling defaults (Qwen-VL)
        setattr(model.generation_config, key, value)
    processor = _processor(spec, tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record_stock_processor_class(out, spec.family)
    info = {"builder": builder_version(preset), "preset": preset, "reference": spec.reference,
            "tokenizer": described, "end_of_turn": spec.end_of_turn, "image_size": spec.image_size,
            "patch_size": spec.patch_size, "merge_size": spec.merge_size,
            "context_length": config.get_text_config().max_position_embeddings}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=1))
