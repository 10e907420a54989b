"""How a model's image processor frames a picture: the coordinates its answers point with (no torch here).

A vision-language model writes a box in the frame of the picture *as its processor gave it to the vision
tower*: Qwen2.5-VL in pixels of the picture resized by ``smart_resize``; LLaVA-1.5 (transformers'
``CLIPImageProcessor``) as fractions of the centre crop of the picture resized to cover the crop; LLaVA's
original code (``LlavaImageProcessor(do_pad=True)``) as fractions of the picture padded to a square. A
``PictureGeometry`` holds the processor's settings and maps a point between that frame and the pixels of
the picture the app holds, both ways, with the processor's own arithmetic (tested against the processors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the processors' modes: the whole picture resized (Qwen's ``smart_resize``, or the same frame as the picture
#: for the rest), the centre crop of a shortest-edge resize (CLIP), the picture padded to a square (LLaVA)
MODES = ("whole", "smart_resize", "center_crop", "pad_square")


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen2-VL's resize (``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``): both sides
    a multiple of ``factor``, the area within ``[min_pixels, max_pixels]``, the aspect ratio kept as closely
    as it can be. Returns ``(height, width)``."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Frame:
    """One picture's frame as the model saw it: ``size`` (width, height) in the model's pixels, and the
    affine map to the picture's pixels: ``x_picture = (x_frame - offset_x) * scale_x`` (likewise for y)."""

    size: tuple[float, float]
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)

    def to_picture(self, x: float, y: float) -> tuple[float, float]:
        """A point of the frame (model pixels) in the picture's pixels."""
        return (x - self.offset[0]) * self.scale[0], (y - self.offset[1]) * self.scale[1]

    def from_picture(self, x: float, y: float) -> tuple[float, float]:
        """A point of the picture (its pixels) in the frame's pixels."""
        return x / self.scale[0] + self.offset[0], y / self.scale[1] + self.offset[1]


@dataclass(frozen=True)
class PictureGeometry:
    """A processor's framing (``mode``, one of ``MODES``) and the settings it needs."""

    mode: str = "whole"
    factor: int = 28  # smart_resize: patch size x merge size
    min_pixels: int = 56 * 56
    max_pixels: int = 14 * 14 * 4 * 1280
    shortest_edge: int = 336  # center_crop: the resize before the crop
    crop: tuple[int, int] = (336, 336)  # center_crop: (width, height)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown picture geometry {self.mode!r}; known: {', '.join(MODES)}")

    def frame(self, width: int, height: int) -> Frame:
        """How the processor frames a ``width`` x ``height`` picture."""
        width, height = max(1, int(width)), max(1, int(height))
        if self.mode == "smart_resize":
            h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
            return Frame(size=(w, h), scale=(width / w, height / h))
        if self.mode == "pad_square":  # the picture centred on a square of its longer side (LLaVA's expand2square)
            side = max(width, height)
            return Frame(size=(side, side), scale=(1.0, 1.0), offset=((side - width) // 2, (side - height) // 2))
        if self.mode == "center_crop":
            # shortest edge to S, the other side int(S * long / short) (transformers' get_resize_output_image_size),
            # then the centre crop (``int((size - crop) / 2)`` from the top and the left; padded when smaller)
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            crop_w, crop_h = self.crop
            left = int((new_w - crop_w) / 2.0) if new_w >= crop_w else -((crop_w - new_w) // 2)
            top = int((new_h - crop_h) / 2.0) if new_h >= crop_h else -((crop_h - new_h) // 2)
            # a frame point x is resized-picture point x + left: picture x = (x + left) * width / new_w
            return Frame(size=(crop_w, crop_h), scale=(width / new_w, height / new_h), offset=(-left, -top))
        return Frame(size=(width, height), scale=(1.0, 1.0))

    @classmethod
    def from_processor(cls, image_processor: Any) -> PictureGeometry:
        """Read a transformers image processor's settings (duck-typed: no transformers import here)."""

        def get(obj: Any, key: str) -> Any:
            return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

        size = getattr(image_processor, "size", None)
        merge, patch = getattr(image_processor, "merge_size", None), getattr(image_processor, "patch_size", None)
        if merge and patch:  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL
            lo = get(size, "shortest_edge") or getattr(image_processor, "min_pixels", None) or 56 * 56
            hi = get(size, "longest_edge") or getattr(image_processor, "max_pixels", None) or 14 * 14 * 4 * 1280
            return cls("smart_resize", factor=int(patch) * int(merge), min_pixels=int(lo), max_pixels=int(hi))
        if getattr(image_processor, "image_grid_pinpoints", None):  # LLaVA-NeXT: the whole picture, in tiles
            return cls("whole")
        if getattr(image_processor, "do_pad", False) and hasattr(image_processor, "pad_to_square"):
            return cls("pad_square")
        crop = getattr(image_processor, "crop_size", None)
        if getattr(image_processor, "do_center_crop", False) and crop and get(size, "shortest_edge"):
            return cls("center_crop", shortest_edge=int(get(size, "shortest_edge")),
                       crop=(int(get(crop, "width")), int(get(crop, "height"))))
        return cls("whole")
