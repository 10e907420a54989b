"""Regions a person marks on a picture, told to the model in its own convention (``grounding.py``).

A region arrives in the picture's own pixels (the page's large view, or ``/chat``'s ``regions``): a box
``[x1, y1, x2, y2]`` or a point ``[x, y]``. It reaches the model as words in its family's terms: Qwen2.5-VL's
``{"bbox_2d": [...]}`` in pixels of its resized picture, Qwen3-VL's on the 0-1000 grid, LLaVA's fractions of
its frame. A family with no documented way to take one (or a region outside what the model sees of the
picture, such as outside a centre crop) gets it as a picture of its own, cut out (``crop_box``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llava_app.chat.grounding import Convention, is_number, named_pictures
from llava_app.engine.geometry import PictureGeometry
from llava_app.errors import UserError
from llava_app.storage.records import image_label


@dataclass(frozen=True)
class Ask:
    """A region of a picture the person marked, in the picture's pixels: a box (x1, y1, x2, y2) or a point."""

    image: int
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None


def read_regions(value: Any, limit: int = 8) -> list[Ask]:
    """``/chat``'s ``regions`` (a list, or its JSON): ``{"image": 2, "box": [x1, y1, x2, y2]}`` or
    ``{"image": 2, "point": [x, y]}``; anything else is refused with a message saying what was expected."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise UserError("region.format") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise UserError("region.format")
    if len(value) > limit:
        raise UserError("region.too_many", limit=limit)
    asks = []
    for item in value:
        if not isinstance(item, dict):
            raise UserError("region.format")
        image = item.get("image")
        if isinstance(image, str) and (named := named_pictures(image)):
            image = named[0]
        if not is_number(image) or int(image) != image:
            raise UserError("region.format")
        box, point = item.get("box"), item.get("point")
        if isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box):
            x1, y1, x2, y2 = (float(v) for v in box)
            asks.append(Ask(int(image), box=(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))))
        elif isinstance(point, list) and len(point) == 2 and all(is_number(v) for v in point):
            asks.append(Ask(int(image), point=(float(point[0]), float(point[1]))))
        else:
            raise UserError("region.format")
    return asks


def clamp_ask(ask: Ask, width: int, height: int) -> Ask:
    """The region within its picture; one wholly outside it is refused."""
    if ask.point is not None:
        x, y = ask.point
        if not (0 <= x <= width and 0 <= y <= height):
            raise UserError("region.outside", label=image_label(ask.image), width=width, height=height)
        return ask
    x1, y1, x2, y2 = ask.box or (0, 0, 0, 0)
    box = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise UserError("region.outside", label=image_label(ask.image), width=width, height=height)
    return Ask(ask.image, box=box)


def region_text(ask: Ask, label: str, convention: Convention, geometry: PictureGeometry | None,
                width: int, height: int) -> str | None:
    """How the model is told of a region, in its convention ("Image 2, region {"bbox_2d": [...]}"); None when
    the region falls wholly outside what the model sees of the picture (a centre crop): send it cropped."""
    frame = (geometry or convention.geometry).frame(width, height)
    fw, fh = frame.size
    per = convention.scale
    points = [ask.point] if ask.point is not None else [ask.box[:2], ask.box[2:]]  # type: ignore[index]
    values: list[float] = []
    for x, y in points:
        fx, fy = frame.from_picture(x, y)
        fx, fy = min(max(fx, 0.0), fw), min(max(fy, 0.0), fh)
        values += [fx / fw * per, fy / fh * per] if per else [fx, fy]
    if ask.box is not None and (values[2] - values[0] <= 0 or values[3] - values[1] <= 0):
        return None
    if convention.syntax == "json":
        numbers = ", ".join(str(round(v)) for v in values)
        key = "bbox_2d" if ask.box is not None else "point_2d"
        return f'{label}, region {{"{key}": [{numbers}]}}'
    numbers = ", ".join(f"{v:.2f}" for v in values)
    return f"{label}, {'region' if ask.box is not None else 'point'} [{numbers}]"


def crop_box(ask: Ask, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels to cut out for a region sent as its own picture (a point: a square a quarter of the shorter
    side wide around it)."""
    if ask.box is not None:
        x1, y1, x2, y2 = ask.box
    else:
        x, y = ask.point or (0, 0)
        half = max(8.0, min(width, height) / 8)
        x1, y1, x2, y2 = x - half, y - half, x + half, y + half
    x1, y1 = max(0, int(x1)), max(0, int(y1))
    x2, y2 = min(width, max(x1 + 1, round(x2))), min(height, max(y1 + 1, round(y2)))
    return x1, y1, x2, y2
