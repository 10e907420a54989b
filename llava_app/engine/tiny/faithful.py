"""Tiny models that speak like the real checkpoints: ``--model tiny-faithful-*``.

Each matches its reference checkpoint in everything but width, depth and weights: the real tokenizer
(``real_tokenizers.py``), the real special and image tokens with their ids, the checkpoint's chat
template, and its image geometry (image size, patch, anyres grids), so prompts, token counts, BPE
re-tokenisation, streaming of multi-byte characters and end-of-turn tokens behave as with the real
model. Where the vocabulary files are missing they fall back to the word-level tokenizer of
``build.py`` and say so (``tiny_model.json``: ``"tokenizer": "word-level fallback: ..."``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FAITHFUL_VERSION = "f3"  # bump when the recipe changes; old folders are rebuilt

# ----- chat templates, as the checkpoints ship them ---------------------------------------------
# llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-vicuna-7b-hf (Vicuna v1 format): transformers'
# tests/models/llava/test_processor_llava.py and tests/models/llava_next/test_processing_llava_next.py
# (prepare_processor_dict), whose test_chat_template checks "USER: <image>\nWhat is shown in this
# image? ASSISTANT:" against both checkpoints. A system message is rendered as bare text.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# llava-hf/llava-onevision-qwen2-*-ov-hf (ChatML): transformers'
# src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py (chat_template);
# docs/source/en/model_doc/llava_onevision.md decodes it as "user\n\nWhat is shown...\nassistant\n...".
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{# Render all video then #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf/llava-interleave-qwen-*-hf (ChatML): the checkpoint's chat_template.json as quoted (with only
# the <|im_end|> moved into the generation block) by training collators that cite it, e.g.
# "slightly different from https://huggingface.co/llava-hf/llava-interleave-qwen-0.5b-hf/blob/main/
# chat_template.json"; transformers' docs/source/en/model_doc/llava.md gives the same shape
# ("<|im_start|>user <image>\n<prompt1><|im_end|><|im_start|>assistant ...").
INTERLEAVE_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}"
    "{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# LLaVA-NeXT (llava-v1.6) anyres grids at 336 px; OneVision's anyres_max_9 grids: 1..6 x 1..6 tiles of 384 px.
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]


@dataclass(frozen=True)
class FaithfulSpec:
    """What a faithful tiny model copies from its reference checkpoint."""

    family: str  # llava | llava_next | llava_onevision
    reference: str
    vocab: str  # real_tokenizers kind: qwen2 | llama-spm
    template: str
    vision: str  # clip_vision_model | siglip_vision_model
    image_size: int
    patch_size: int
    added_tokens: tuple[str, ...] = ("<image>",)
    pad_token: str = "<unk>"
    vocab_size: int = 32064  # the checkpoint's embedding rows (padded past the tokenizer)
    end_of_turn: str = "</s>"
    select_strategy: str = "default"
    feature_layer: int = -2
    pinpoints: list = field(default_factory=list)
    text_hidden: int = 32
    text_layers: int = 2
    context_length: int = 4096  # the text model's window: Vicuna v1.5 4,096; Qwen2/Qwen1.5 32,768
    tie_embeddings: bool = False  # the bench model shares them: Qwen2's 152k-row table dominates its size


FAITHFUL_PRESETS = {
    "tiny-faithful-llava": FaithfulSpec(
        "llava", "llava-hf/llava-1.5-7b-hf", "llama-spm", VICUNA_TEMPLATE, "clip_vision_model", 336, 14,
        added_tokens=("<image>", "<pad>"), pad_token="<pad>"),
    "tiny-faithful-llava-next": FaithfulSpec(
        "llava_next", "llava-hf/llava-v1.6-vicuna-7b-hf", "llama-spm", VICUNA_TEMPLATE, "clip_vision_model", 336, 14,
        pinpoints=NEXT_PINPOINTS),
    "tiny-faithful-llava-onevision": FaithfulSpec(
        "llava_onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "qwen2", ONEVISION_TEMPLATE,
        "siglip_vision_model", 384, 14, added_tokens=("<image>", "<video>"), pad_token="<|endoftext|>",
        vocab_size=152000, end_of_turn="<|im_end|>", select_strategy="full", feature_layer=-1,
        pinpoints=ONEVISION_PINPOINTS, context_length=32768),
    "tiny-faithful-interleave": FaithfulSpec(
        "llava", "llava-hf/llava-interleave-qwen-0.5b-hf", "qwen2", INTERLEAVE_TEMPLATE, "siglip_vision_model",
        384, 14, pad_token="<|endoftext|>", vocab_size=152000, end_of_turn="<|im_end|>", select_strategy="full",
        feature_layer=-1, context_length=32768),
}
# For the multi-turn benchmark: the interleave checkpoint's tokenizer, template and geometry (729 tokens
# per image) with a text model big enough that prefill costs real time on a CPU.
FAITHFUL_PRESETS["tiny-faithful-bench"] = FaithfulSpec(
    **{**FAITHFUL_PRESETS["tiny-faithful-interleave"].__dict__, "text_hidden": 256, "text_layers": 8,
       "tie_embeddings": True})


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
            return real_tokenizers.qwen2_tokenizer(list(spec.added_tokens)), "qwen2 (llama.cpp GGUF vocabulary)"
        tok = real_tokenizers.llama_tokenizer(list(spec.added_tokens), pad_token=spec.pad_token)
        return tok, "llama-spm (llama.cpp GGUF vocabulary)"
    from llava_app.engine.tiny.build import _build_tokenizer

    log.warning("%s: the real tokenizer is not available (%s); using the word-level one", spec.reference, reason)
    return _build_tokenizer(), f"word-level fallback: {reason}"


def end_of_turn_id(spec: FaithfulSpec, tok) -> int:
    """The id that ends an answer: the checkpoint's end-of-turn token (the fallback's eos if it lacks it)."""
    return tok.get_vocab().get(spec.end_of_turn, tok.eos_token_id)


def _configs(spec: FaithfulSpec, tok, context_length: int):
    """The model config for ``spec`` around tokenizer ``tok``."""
    from transformers import LlavaConfig, LlavaNextConfig, LlavaOnevisionConfig

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
    processor = _processor(spec, tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if spec.family == "llava_onevision":
        from llava_app.engine.tiny.build import _fix_processor_class

        _fix_processor_class(out, spec.family)
    info = {"builder": builder_version(preset), "preset": preset, "reference": spec.reference,
            "tokenizer": described, "end_of_turn": spec.end_of_turn, "image_size": spec.image_size,
            "patch_size": spec.patch_size, "context_length": config.get_text_config().max_position_embeddings}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=1))
