"""Processors the app builds itself: LLaVA-OneVision and the Qwen-VL families without their video processors (no
torchvision), and the class recorded for them in a saved model folder."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


@functools.cache
def image_only_class(base_name: str):
    """``base_name`` (a transformers processor class: LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL) without its
    video processor.

    These processors' video processors need torchvision, which a CPU-only install of torch often lacks
    (the PyPI wheel does not load beside it); this app sends images only (video keyframes are pictures),
    so the image processor and the tokenizer are all it needs. The subclass's ``__init__`` names only those
    two, which is what ``ProcessorMixin`` reads as the processor's parts.
    """
    import transformers

    base = getattr(transformers, base_name)

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        kwargs.pop("video_processor", None)
        base.__init__(self, image_processor, tokenizer, None, **kwargs)

    def __call__(self, *args, videos=None, **kwargs):
        if videos is not None:
            raise ValueError("this processor was loaded without a video processor (torchvision is missing)")
        return base.__call__(self, *args, **kwargs)

    return type(f"ImageOnly{base_name}", (base,), {"__init__": __init__, "__call__": __call__,
                                                    "__module__": __name__})


def make_image_only_processor(base_name: str, image_processor, tokenizer, **kwargs):
    """Build the torchvision-free processor ``base_name`` from its parts."""
    return image_only_class(base_name)(image_processor, tokenizer, **kwargs)


def make_image_only_onevision_processor(image_processor, tokenizer, **kwargs):
    """Build the torchvision-free OneVision processor from its parts."""
    return make_image_only_processor("LlavaOnevisionProcessor", image_processor, tokenizer, **kwargs)


#: the stock processor class of each family whose saved folders name it (AutoProcessor loads it where
#: torchvision exists)
STOCK_PROCESSORS = {"llava_onevision": "LlavaOnevisionProcessor", "qwen2_vl": "Qwen2VLProcessor",
                    "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}


def bound_pixels(processor, min_pixels: int | None, max_pixels: int | None) -> bool:
    """Resize pictures within these pixel counts (``--image-pixels``), where the image processor resizes by area
    (Qwen2-VL's ``smart_resize``: ``size = {shortest_edge: min, longest_edge: max}`` pixels); True when applied."""
    images = processor.image_processor
    size = getattr(images, "size", None)
    if min_pixels is None and max_pixels is None:
        return False
    if not (getattr(images, "merge_size", None) and size is not None and size.get("longest_edge")):
        log.warning("--image-pixels is ignored: %s resizes pictures to a fixed size", type(images).__name__)
        return False
    low = min_pixels if min_pixels is not None else min(size["shortest_edge"], max_pixels)
    high = max_pixels if max_pixels is not None else max(size["longest_edge"], low)
    images.size = {"shortest_edge": int(low), "longest_edge": int(high)}
    for name, value in (("min_pixels", low), ("max_pixels", high)):
        if getattr(images, name, None) is not None:
            setattr(images, name, int(value))
    log.info("pictures are resized within %d and %d pixels", low, high)
    return True


def record_stock_processor_class(out: Path, family: str) -> None:
    """Record the stock processor class, so AutoProcessor finds it where torchvision exists."""
    if family not in STOCK_PROCESSORS:
        return
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = out / name
        if f.exists():
            data = json.loads(f.read_text())
            if "processor_class" in data:
                data["processor_class"] = STOCK_PROCESSORS[family]
                f.write_text(json.dumps(data, indent=2))
