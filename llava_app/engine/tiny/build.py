"""Tiny random-weight LLaVA models, built locally from configs (no hub access).

They exercise each family's real processor and model code (LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision) at a few hundred thousand parameters, with a word-level tokenizer
so that streamed output is readable (random) words. Used by the tests, the
offline smoke run (``--model tiny-random``) and the benchmark (``bench`` preset,
LLaVA-1.5 token geometry: 576 tokens per image).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llava_app.engine.local.processors import make_image_only_onevision_processor, record_stock_processor_class
from llava_app.engine.tiny.faithful import build_faithful, builder_version
from llava_app.engine.tiny.presets import TINY_PRESETS
from llava_app.engine.tiny.words import CHAT_TEMPLATE, SPECIAL, build_tokenizer

BUILDER_VERSION = "5"  # bump when the recipe changes; old folders are rebuilt


@dataclass(frozen=True)
class TinySpec:
    """Geometry of a tiny model: small by default, LLaVA-1.5-like for the benchmark."""

    family: str
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    context_length: int = 4096


def spec_for(preset: str, context_length: int | None = None) -> TinySpec:
    """The spec behind a preset name (``tiny-random-llava-next``, ...)."""
    family = TINY_PRESETS[preset]
    if family == "bench":
        # LLaVA-1.5 geometry: 336 px, patch 14 -> 576 tokens per image; a text model
        # big enough that prefill costs real time on a CPU.
        spec = TinySpec(
            family="llava", image_size=336, patch_size=14, vision_hidden=64, vision_layers=2,
            text_hidden=512, text_layers=8, text_heads=8, text_kv_heads=8, text_intermediate=1536,
            context_length=8192,
        )
    else:
        spec = TinySpec(family=family)
    if context_length:
        spec = TinySpec(**{**spec.__dict__, "context_length": int(context_length)})
    return spec


def default_cache_dir() -> Path:
    """Where built tiny models live (``LLAVA_APP_CACHE`` or ~/.cache/llava-app)."""
    root = os.environ.get("LLAVA_APP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llava-app")
    return Path(root) / "tiny-models"


def _sizes(spec: TinySpec, tokenizer) -> tuple[dict, dict]:
    """The text and vision configs' sizes (plain dicts, shared by the families)."""
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.context_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 2,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=4,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    return text, vision


_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _llava(spec: TinySpec, tokenizer, text: dict, vision: dict):
    """LLaVA-1.5: CLIP vision tower, Llama text model."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    side = spec.image_size
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **vision, "projection_dim": 32},
        text_config={"model_type": "llama", **text},
        image_token_index=tokenizer.convert_tokens_to_ids(SPECIAL["image"]),
        image_seq_length=(side // spec.patch_size) ** 2,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    return config, processor


def _pinpoints(spec: TinySpec) -> list[list[int]]:
    side = spec.image_size
    return [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]


def _llava_next(spec: TinySpec, tokenizer, text: dict, vision: dict):
    """LLaVA-NeXT: high-resolution tiles (any-resolution grid), Llama text model."""
    from transformers import LlavaNextConfig, LlavaNextImageProcessor, LlavaNextProcessor

    side = spec.image_size
    config = LlavaNextConfig(
        vision_config={"model_type": "clip_vision_model", **vision, "projection_dim": 32},
        text_config={"model_type": "llama", **text},
        image_token_index=tokenizer.convert_tokens_to_ids(SPECIAL["image"]),
        image_grid_pinpoints=_pinpoints(spec),
        image_seq_length=(side // spec.patch_size) ** 2,
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_grid_pinpoints=_pinpoints(spec), image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    return config, processor


def _llava_onevision(spec: TinySpec, tokenizer, text: dict, vision: dict):
    """LLaVA-OneVision: SigLIP vision tower, Qwen2 text model (the processor without video support)."""
    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    side = spec.image_size
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **vision},
        text_config={"model_type": "qwen2", **text},
        image_token_index=tokenizer.convert_tokens_to_ids(SPECIAL["image"]),
        video_token_index=tokenizer.convert_tokens_to_ids(SPECIAL["video"]),
        image_grid_pinpoints=_pinpoints(spec),
        vision_feature_select_strategy="full",
    )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=_pinpoints(spec),
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = make_image_only_onevision_processor(
        image_processor, tokenizer,
        num_image_tokens=(side // spec.patch_size) ** 2, vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )
    return config, processor


_FAMILIES = {"llava": _llava, "llava_next": _llava_next, "llava_onevision": _llava_onevision}


def _randomise(model, tokenizer) -> None:
    """Random weights, but not degenerate.

    With the default tiny init a random model repeats one word for ever and ignores its
    input. Larger language-model weights make each answer a varied walk through the
    vocabulary that depends on the question and the images (so tests can tell a right
    cache from a wrong one).
    """
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.3)
        head = model.get_output_embeddings()
        head.weight.normal_(0.0, 1.0)
        for name, weight in model.named_parameters():
            if "language_model" in name and weight.dim() == 2 and "embed" not in name:
                weight.normal_(0.0, 0.2)
        # Keep the end-of-turn token unlikely so answers run to max_new_tokens
        # (tests and the streaming demo want long, predictable-length answers).
        head.weight[tokenizer.eos_token_id].zero_()


def _build(spec: TinySpec, out: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = build_tokenizer()
    text, vision = _sizes(spec, tokenizer)
    config, processor = _FAMILIES[spec.family](spec, tokenizer, text, vision)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    model.eval()
    _randomise(model, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record_stock_processor_class(out, spec.family)
    (out / "tiny_model.json").write_text(json.dumps({"builder": BUILDER_VERSION, **spec.__dict__}, indent=1))


def _builder_version(preset: str) -> str:
    """The recipe version a built folder must carry (faithful models: theirs, with the tokenizer's source)."""
    if TINY_PRESETS[preset] == "faithful":
        return builder_version(preset)
    return BUILDER_VERSION


def build_tiny_model(preset: str = "tiny-random", cache_dir: str | os.PathLike | None = None,
                     context_length: int | None = None) -> Path:
    """Build (once) the tiny model ``preset`` into a cache folder and return its path.

    Args:
        preset: one of ``TINY_PRESETS`` (``tiny-random``, ``tiny-random-llava-next``, ...).
        cache_dir: parent folder; defaults to ``default_cache_dir()``.
        context_length: the text model's window (``max_position_embeddings``); tests of
            context fitting use a small one.

    Example:
        >>> path = build_tiny_model("tiny-random-llava-onevision")  # doctest: +SKIP
    """
    if preset not in TINY_PRESETS:
        raise KeyError(f"unknown tiny model {preset!r}; choose one of {', '.join(TINY_PRESETS)}")
    faithful = TINY_PRESETS[preset] == "faithful"
    spec = None if faithful else spec_for(preset, context_length)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    name = preset if context_length is None else f"{preset}-ctx{context_length}"
    out = root / name
    marker = out / "tiny_model.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("builder") == _builder_version(preset):
                return out
        except (OSError, ValueError):
            pass
    root.mkdir(parents=True, exist_ok=True)
    # Build into a temporary folder and rename, so a concurrent or interrupted build
    # never leaves a half-written model behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        if faithful:
            build_faithful(preset, tmp, context_length)
        else:
            _build(spec, tmp)
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if not marker.exists():  # someone else won the race only if they finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
