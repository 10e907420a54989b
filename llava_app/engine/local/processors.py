"""Processors the app builds itself: LLaVA-OneVision without its video processor (no torchvision)."""

from __future__ import annotations


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
