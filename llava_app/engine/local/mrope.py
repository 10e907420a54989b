"""Qwen-VL's multimodal rotary positions (M-RoPE) and Qwen3-VL's deepstack features, for the prefix reuse of
``kvcache.py``.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL give every token three rotary positions (time, height, width): a picture's
tokens are laid out on its grid, and the text after it continues from the picture's largest position, so a
token's position is its index plus a shift (``rope_delta``) that depends on every picture before it. The model
works that out itself only when it reads a prompt from its first token, and keeps one shift for whichever
request ran last. The engine computes each prompt's positions with the model's own ``get_rope_index`` and hands
them over, so a reused prefix, cached picture features, an edit point and a batched decode step (each sequence
with its own shift) place every token as a fresh read would.

torch and transformers are imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

from typing import Any

from llava_app.engine.local.prefixes import ImageSpan


def rope_positions(model, ids, spans, grids: list[Any]) -> tuple[Any, int]:
    """The three rotary positions of every prompt token ``(3, 1, len)`` and the shift of the tokens after it,
    from ``model.model.get_rope_index``: pictures where ``spans`` say, each of its ``(t, h, w)`` patch grid."""
    import torch

    types = torch.zeros((1, ids.numel()), dtype=torch.int32)
    for span in spans:
        types[0, span.start:span.stop] = 1
    grid = torch.stack([torch.as_tensor(g) for g in grids]).long() if grids else None
    positions, delta = model.model.get_rope_index(ids.view(1, -1).cpu(), mm_token_type_ids=types, image_grid_thw=grid)
    return positions, int(delta.view(-1)[0])


def image_runs(ids, image_token_id: int) -> list[ImageSpan]:
    """The pictures of a prompt the processor laid out: runs of the image token (Qwen-VL closes each picture with
    ``<|vision_end|>``, so two never touch)."""
    is_image = (ids == image_token_id).tolist()
    spans, i = [], 0
    while i < len(is_image):
        if is_image[i]:
            j = i
            while j < len(is_image) and is_image[j]:
                j += 1
            spans.append(ImageSpan(i, j, ""))
            i = j
        else:
            i += 1
    return spans


def feature_bytes(feature) -> int:
    """Bytes of a cached picture feature: a tensor, or (Qwen3-VL) a tensor and its deepstack tensors."""
    if isinstance(feature, tuple):
        return feature_bytes(feature[0]) + sum(feature_bytes(f) for f in feature[1])
    return feature.numel() * feature.element_size()


def encoder_outputs(feats: list[Any]):
    """``mm_encoder_outputs["image"]`` for these per-picture features (Qwen3-VL's with their deepstack parts)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if feats and isinstance(feats[0], tuple):
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        layers = len(feats[0][1])
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=[f[0] for f in feats],
            deepstack_features=[tuple(f[1][layer] for f in feats) for layer in range(layers)])
    return BaseModelOutputWithPooling(pooler_output=feats)
