"""``PictureGeometry`` against the image processors themselves: the frame a model writes its boxes in.

Real checkpoints' settings: Qwen2.5-VL-7B-Instruct's preprocessor (patch 14, merge 2, 3136 to 12845056
pixels), Qwen3-VL's (patch 16, merge 2, 65536 to 16777216), llava-hf/llava-1.5-7b-hf's CLIP processor
(shortest edge 336, centre crop 336) and LLaVA's original padding to a square (``do_pad``). A dark mark
is put on pictures of several sizes and aspect ratios, the processor is run, the mark is found in its
output, and the geometry must map it back to where it was drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from llava_app.engine.geometry import PictureGeometry, smart_resize

SIZES = [(640, 480), (480, 640), (1000, 200), (37, 512), (336, 336), (1920, 1080), (90, 60)]


def qwen_processor(patch: int, lo: int, hi: int):
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": lo, "longest_edge": hi})


@pytest.mark.parametrize("patch,lo,hi", [(14, 3136, 12845056), (16, 65536, 16777216), (14, 3136, 200704)],
                         ids=["qwen2.5-vl", "qwen3-vl", "qwen2.5-vl-bounded"])
def test_the_qwen_frame_is_the_size_the_processor_resizes_to(patch, lo, hi):
    processor = qwen_processor(patch, lo, hi)
    geometry = PictureGeometry.from_processor(processor)
    assert geometry.mode == "smart_resize" and geometry.factor == 2 * patch
    for width, height in SIZES:
        grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="np")["image_grid_thw"][0]
        frame = geometry.frame(width, height)
        assert frame.size == (grid[2] * patch, grid[1] * patch), (width, height)
        assert frame.to_picture(*frame.size) == pytest.approx((width, height))  # the corners meet


def test_smart_resize_is_transformers_own():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as theirs

    for width, height in [*SIZES, (5000, 40), (10, 30)]:
        assert smart_resize(height, width, 28, 3136, 12845056) == theirs(height, width, 28, 3136, 12845056)


def marked(width: int, height: int, at: tuple[float, float], side: int = 6) -> Image.Image:
    picture = Image.new("RGB", (width, height), (200, 200, 200))
    x, y = at
    ImageDraw.Draw(picture).rectangle([x - side / 2, y - side / 2, x + side / 2 - 1, y + side / 2 - 1], fill=(0, 0, 0))
    return picture


def found(pixels: np.ndarray) -> tuple[float, float]:
    """The centre of the dark mark in a processed (C, H, W) array, in its pixels."""
    grey = pixels.mean(axis=0)
    dark = grey < (grey.max() + grey.min()) / 2
    ys, xs = np.nonzero(dark)
    return xs.mean() + 0.5, ys.mean() + 0.5


@pytest.mark.parametrize("kind", ["center_crop", "pad_square"])
def test_the_llava_frame_maps_a_mark_back_to_where_it_was_drawn(kind):
    from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil

    if kind == "center_crop":  # llava-hf/llava-1.5-7b-hf's preprocessor_config.json
        processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                          do_center_crop=True)
    else:  # LLaVA's own expand2square, then the same resize
        processor = LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 336},
                                           crop_size={"height": 336, "width": 336}, do_center_crop=True)
    geometry = PictureGeometry.from_processor(processor)
    assert geometry.mode == kind
    for width, height in [(640, 480), (480, 640), (1000, 300), (336, 336), (200, 150)]:
        # a mark where a centre crop still shows it: the middle, and a point off the middle on the long side
        for fx, fy in [(0.5, 0.5), (0.6, 0.45), (0.4, 0.55)]:
            at = (width * fx, height * fy)
            out = processor(images=[marked(width, height, at, side=max(6, round(max(width, height) / 60)))],
                            return_tensors="np")["pixel_values"][0]
            frame = geometry.frame(width, height)
            assert out.shape[2] / frame.size[0] == pytest.approx(out.shape[1] / frame.size[1])
            scale = out.shape[2] / frame.size[0]  # the frame, resized to what the vision tower takes
            seen = found(out)
            back = frame.to_picture(seen[0] / scale, seen[1] / scale)
            tolerance = 1.5 * max(frame.scale) * (frame.size[0] / out.shape[2]) + 1
            assert back == pytest.approx(at, abs=tolerance), (kind, width, height, at)


def test_a_processor_the_app_does_not_know_frames_the_whole_picture():
    class Plain:
        size = {"height": 224, "width": 224}

    frame = PictureGeometry.from_processor(Plain()).frame(640, 480)
    assert frame.to_picture(320, 240) == (320, 240)
    with pytest.raises(ValueError):
        PictureGeometry("stretch")
