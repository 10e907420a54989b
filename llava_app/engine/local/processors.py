"""Processors the app builds itself: LLaVA-OneVision without its video processor (no torchvision), and the
class recorded for it in a saved model folder."""

from __future__ import annotations

import json
from pathlib import Path


def _image_only_onevision_class():
    """A LLaVA-OneVision processor without its video processor.

    transformers' OneVision video processor needs torchvision, which a CPU-only
    install of torch often lacks; this app sends images only, so the image
    processor and the tokenizer are all it needs.
    """
    from transformers import LlavaOnevisionProcessor

    class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
        def __init__(self, image_processor=None, tokenizer=None, **kwargs):
            kwargs.pop("video_processor", None)
            super().__init__(image_processor, tokenizer, None, **kwargs)

        def __call__(self, *args, videos=None, **kwargs):
            if videos is not None:
                raise ValueError("this processor was loaded without a video processor (torchvision is missing)")
            return super().__call__(*args, **kwargs)

    return ImageOnlyLlavaOnevisionProcessor


def make_image_only_onevision_processor(image_processor, tokenizer, **kwargs):
    """Build the torchvision-free OneVision processor from its parts."""
    return _image_only_onevision_class()(image_processor, tokenizer, **kwargs)


def record_stock_processor_class(out: Path, family: str) -> None:
    """Record the stock processor class, so AutoProcessor finds it where torchvision exists."""
    if family != "llava_onevision":
        return
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = out / name
        if f.exists():
            data = json.loads(f.read_text())
            if "processor_class" in data:
                data["processor_class"] = "LlavaOnevisionProcessor"
                f.write_text(json.dumps(data, indent=2))
