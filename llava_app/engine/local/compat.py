"""The few transformers internals the engine still relies on, checked once when an engine starts.

Prefix reuse (kvcache.py) lays a prompt out exactly as the processor's ``__call__``
would: it needs the processor's merged per-modality defaults, which only the private
``ProcessorMixin._merge_kwargs`` computes, and the per-image placeholder helpers
``replace_image_token``/``get_text_with_replacements``. When a transformers version lacks
any of them, one warning is logged and the engine reads every prompt whole (no prefix
reuse, no cached image features): slower on long chats, never wrong.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: processor members prefix reuse needs (the first is private)
LAYOUT_MEMBERS = ("_merge_kwargs", "replace_image_token", "get_text_with_replacements")
# Warned about once per processor class and reason, not once per engine.
_warned: set[tuple[str, str]] = set()


def _warn_once(processor: Any, reason: str) -> None:
    key = (type(processor).__name__, reason)
    if key not in _warned:
        _warned.add(key)
        log.warning("prefix reuse is off for %s: %s in this transformers version; every turn reads its whole "
                    "prompt", key[0], reason)


def processing_kwargs(processor: Any) -> dict[str, dict] | None:
    """The processor's defaults as its ``__call__`` merges them (``{"text": ..., "images": ...}``).

    None, after one warning, when this transformers lacks what prefix reuse needs.
    """
    missing = [name for name in LAYOUT_MEMBERS if not callable(getattr(processor, name, None))]
    if missing:
        _warn_once(processor, f"the processor has no {', '.join(missing)}")
        return None
    tokenizer = processor.tokenizer
    try:
        merged = processor._merge_kwargs(tokenizer_init_kwargs=tokenizer.init_kwargs, return_tensors="pt")
        text_kwargs, images_kwargs = dict(merged["text_kwargs"]), dict(merged["images_kwargs"])
    except (TypeError, KeyError, AttributeError) as exc:
        _warn_once(processor, f"_merge_kwargs changed ({type(exc).__name__}: {exc})")
        return None
    for key in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
        text_kwargs.pop(key, None)  # options of the processor's own call, not of the tokenizer's
    return {"text": text_kwargs, "images": images_kwargs}
