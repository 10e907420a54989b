"""Boxes and points in answers, placed on the right picture; regions a person marks, sent in the model's terms.

Each family writes coordinates its own way; ``CONVENTIONS`` holds one entry per way, so a new one is a small
entry (its units, its syntax, the architectures and served model ids that use it, where it is documented):

- **Qwen2.5-VL** writes JSON objects ``{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`` (and ``"point_2d": [x,
  y]``) in absolute pixels of the picture *as its processor resized it* (``smart_resize``): QwenLM/Qwen2.5-VL,
  ``cookbooks/spatial_understanding.ipynb`` ("Qwen2.5-VL ... uses absolute coordinates based on the actual size
  of the image" after resizing; its ``plot_bounding_boxes`` scales by ``input_width``/``input_height``).
- **Qwen3-VL** writes the same keys on a relative 0-1000 grid: QwenLM/Qwen3-VL, ``cookbooks/2d_grounding.ipynb``
  and ``spatial_understanding.ipynb`` (coordinates "normalized to 0-1000"; pixels = value / 1000 * size).
- **LLaVA-1.5** and its successors write ``[x1, y1, x2, y2]`` as fractions 0-1 of the picture as their
  processor framed it (LLaVA-1.5 paper, "Improved Baselines with Visual Instruction Tuning", the region-level
  VQA format of its RefCOCO/Visual Genome data: "[0.39, 0.6, 0.54, 0.78]"; the frame is
  ``engine.geometry``'s centre crop or padded square).

Boxes are mapped back to the pixels of the picture the app holds through the processor's geometry
(``PictureGeometry``), clamped to the picture. The picture is the one the answer names ("Image 2", "图片 2")
before the box, or the only picture in play; a box whose picture is unclear is listed unplaced, never drawn on a
guess. Nothing here is stored: boxes are read from the answer and the picture whenever they are shown.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from llava_app.engine.geometry import PictureGeometry
from llava_app.storage.records import image_label

_NUMBER = r"-?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Convention:
    """One family's way of writing where things are."""

    name: str
    units: str  # "pixels" (of the processor's frame), "per_mille" (0-1000 of it), "unit" (0-1 of it)
    syntax: str  # "json": objects with bbox_2d/point_2d; "brackets": bare [x1, y1, x2, y2] lists
    model_types: tuple[str, ...]  # transformers ``config.model_type`` values of the family
    served: str  # a pattern matching served model ids ("Qwen/Qwen2.5-VL-7B-Instruct")
    geometry: PictureGeometry  # the processor's framing when the engine cannot say (a remote server)
    documented: str  # where the format is written down

    @property
    def scale(self) -> float:
        """Units per frame pixel fraction: 1000 for per-mille, 1 for fractions (pixels are the frame's own)."""
        return {"per_mille": 1000.0, "unit": 1.0}.get(self.units, 0.0)


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("qwen2.5-vl", "pixels", "json", ("qwen2_5_vl",), r"qwen2\.5-?vl",
               PictureGeometry("smart_resize", factor=28, min_pixels=3136, max_pixels=12845056),
               "QwenLM/Qwen2.5-VL cookbooks/spatial_understanding.ipynb"),
    Convention("qwen3-vl", "per_mille", "json", ("qwen3_vl", "qwen3_vl_moe"), r"qwen3-?vl",
               PictureGeometry("smart_resize", factor=32, min_pixels=65536, max_pixels=16777216),
               "QwenLM/Qwen3-VL cookbooks/2d_grounding.ipynb"),
    Convention("llava", "unit", "brackets", ("llava", "llava_next", "llava_onevision", "vipllava"), r"llava",
               PictureGeometry("center_crop", shortest_edge=336, crop=(336, 336)),
               "LLaVA-1.5 paper (arXiv:2310.03744), region-level VQA format"),
)}
#: ``--grounding`` values: a convention, or "none" (no boxes read; regions sent as cropped pictures)
CHOICES = (*CONVENTIONS, "none")


def convention_for(model_type: str = "", model_id: str = "", override: str = "") -> Convention | None:
    """The convention of a model: ``override`` (``--grounding``), else its architecture, else its served id."""
    if override:
        return CONVENTIONS.get(override)
    for convention in CONVENTIONS.values():
        if model_type and model_type in convention.model_types:
            return convention
    lowered = model_id.lower()
    return next((c for c in CONVENTIONS.values() if model_id and re.search(c.served, lowered)), None)


@dataclass
class Mark:
    """A box (four numbers) or a point (two) as the model wrote it, and where in the answer."""

    coords: tuple[float, ...]
    label: str = ""
    start: int = 0
    end: int = 0

    @property
    def kind(self) -> str:
        return "box" if len(self.coords) == 4 else "point"


@dataclass
class Region:
    """A mark on a picture: ``image`` (its number; None when unclear), in the picture's pixels."""

    image: int | None
    label: str
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    raw: tuple[float, ...] = field(default_factory=tuple)  # as written, for an unplaced mark

    def as_dict(self, label_of=image_label) -> dict[str, Any]:
        """The API's form: ``{"image": "Image 2", "label": ..., "box": [...]}`` (or ``"point"``)."""
        out: dict[str, Any] = {"image": label_of(self.image) if self.image is not None else None,
                               "label": self.label}
        if self.image is None:
            out["coords"] = [_tidy(v) for v in self.raw]
        elif self.box is not None:
            out["box"] = [round(v) for v in self.box]
        else:
            out["point"] = [round(v) for v in self.point or ()]
        return out


def _tidy(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# ----- reading an answer --------------------------------------------------------------------------------------
_BRACKETS = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_FILLER = re.compile(r"(?i)\s*(?:(?:is|are|was|located|found|appears|lies|sits)\s+)*(?:at|in|:)?\s*$")


def parse(text: str, convention: Convention) -> list[Mark]:
    """The boxes and points of an answer, in the convention's own units, in the order written."""
    return _json_marks(text) if convention.syntax == "json" else _bracket_marks(text)


def _json_marks(text: str) -> list[Mark]:
    marks, after = [], 0
    for key in _KEY.finditer(text):
        if key.start() < after:  # a key inside an object already read
            continue
        start = _opening(text, key.start())
        if start is None:
            continue
        end = _closing(text, start)
        obj = _load(text[start:end]) if end else None
        if not isinstance(obj, dict):
            continue
        name = "bbox_2d" if "bbox_2d" in obj else "point_2d"
        coords = obj.get(name)
        if isinstance(coords, list) and len(coords) == 1 and isinstance(coords[0], list):
            coords = coords[0]  # [[x1, y1, x2, y2]]: one box in a list
        size = 4 if name == "bbox_2d" else 2
        if not isinstance(coords, list) or len(coords) != size or not all(is_number(v) for v in coords):
            continue
        marks.append(Mark(tuple(float(v) for v in coords), _label(obj), start, end))
        after = end
    return marks


_KEY = re.compile(r"[\"'](?:bbox_2d|point_2d)[\"']\s*:")
#: what a mark is called, by the keys the families' cookbooks use ("label"; OCR's "text_content"; names)
_LABEL_KEYS = ("label", "text_content", "text", "name", "name_en", "names", "description")


def _label(obj: dict) -> str:
    for key in _LABEL_KEYS:
        value = obj.get(key)
        if isinstance(value, dict):  # {"zh": ..., "en": ...}
            value = value.get("en") or next((v for v in value.values() if isinstance(v, str)), None)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:80]
    return ""


def _opening(text: str, at: int) -> int | None:
    """The ``{`` that opens the object a key at ``at`` belongs to (None: the key is not in an object)."""
    depth = 0
    for i in range(at - 1, max(-1, at - 2000), -1):
        ch = text[i]
        if ch == "}":
            depth += 1
        elif ch == "{":
            if depth == 0:
                return i
            depth -= 1
    return None


def _closing(text: str, start: int) -> int | None:
    """The end (exclusive) of the object opened at ``start``, strings skipped; None when it is not closed."""
    depth, quote, escaped = 0, "", False
    for i in range(start, min(len(text), start + 20000)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _load(source: str) -> Any:
    try:
        return json.loads(source)
    except ValueError:
        try:  # single quotes, as some fine-tunes write
            return ast.literal_eval(source)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _bracket_marks(text: str) -> list[Mark]:
    marks, after = [], 0
    for match in _BRACKETS.finditer(text):
        coords = tuple(float(v) for v in match.groups())
        if not all(-0.05 <= v <= 1.05 for v in coords):  # fractions only: "[2, 4, 6, 8]" is not a box
            continue
        label = _FILLER.sub("", text[after:match.start()])  # "The red car is at " -> "The red car"
        label = _NAMED.sub("", re.split(r"[.!?;:\n\[\]]", label)[-1])  # its own clause, without "Image 2"
        label = re.sub(r"(?i)^[\s,]*(?:(?:and|or|in|on|of|for|the|a|an)\s+)*", "", label).strip(" ,*_\"'`")
        marks.append(Mark(coords, label[-60:], match.start(), match.end()))
        after = match.end()
    return marks


# ----- which picture ------------------------------------------------------------------------------------------
_NAMED = re.compile(r"(?i)\bimage\s*#?\s*(\d+)|图片\s*(\d+)|图像\s*(\d+)|图\s*(\d+)|第\s*(\d+)\s*张")


def named_pictures(text: str) -> list[int]:
    """The picture numbers a stretch of text names ("Image 2", "图片 2", "第 2 张"), distinct, in order."""
    found: list[int] = []
    for match in _NAMED.finditer(text):
        number = int(next(g for g in match.groups() if g))
        if number not in found:
            found.append(number)
    return found


def place(text: str, marks: list[Mark], in_play: list[int]) -> list[int | None]:
    """The picture of each mark: the one named by the last sentence before it (since the previous mark) that
    names any ("Image 1 is empty. Image 2 has the car:" -> Image 2); a mark with none keeps the previous mark's
    picture, the first the only picture in play. None when unclear ("Image 1 and Image 2 both have cars:") or
    not in play: such a mark is listed, never drawn on a guess."""
    placed: list[int | None] = []
    current: int | None = None
    after = 0
    for mark in marks:
        named = next((found for sentence in reversed(_SENTENCES.split(text[after:mark.start]))
                      if (found := named_pictures(sentence))), [])
        if len(named) == 1:
            current = named[0]
        elif len(named) > 1:
            current = None
        elif not placed and len(in_play) == 1:
            current = in_play[0]
        placed.append(current if current in in_play else None)
        after = mark.end
    return placed


_SENTENCES = re.compile(r"(?<=[.!?。！？])\s+|\n|(?<=[。！？])")


# ----- coordinates ------------------------------------------------------------------------------------------
def to_picture(mark: Mark, convention: Convention, geometry: PictureGeometry, width: int, height: int) -> Region:
    """A mark in the picture's pixels, clamped to it (boxes may spill past the edge)."""
    frame = geometry.frame(width, height)
    fw, fh = frame.size
    per = convention.scale
    points = []
    for x, y in zip(mark.coords[0::2], mark.coords[1::2], strict=True):
        if per:  # fractions of the frame
            x, y = x / per * fw, y / per * fh
        px, py = frame.to_picture(x, y)
        points.append((min(max(px, 0.0), float(width)), min(max(py, 0.0), float(height))))
    if len(points) == 2:
        (x1, y1), (x2, y2) = points
        return Region(None, mark.label, box=(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), raw=mark.coords)
    return Region(None, mark.label, point=points[0], raw=mark.coords)


def regions(text: str, convention: Convention | None, geometry: PictureGeometry | None,
            pictures: dict[int, tuple[int, int]]) -> list[Region]:
    """What an answer points at: each mark on its picture (``pictures``: number -> (width, height) of those in
    play), or unplaced (``image`` None, the coordinates as written)."""
    if convention is None or not text:
        return []
    marks = parse(text, convention)
    geometry = geometry or convention.geometry
    out = []
    for mark, number in zip(marks, place(text, marks, sorted(pictures)), strict=True):
        if number is None:
            out.append(Region(None, mark.label, raw=mark.coords))
            continue
        region = to_picture(mark, convention, geometry, *pictures[number])
        region.image = number
        if region.box is not None and (region.box[2] - region.box[0] < 1 or region.box[3] - region.box[1] < 1):
            out.append(Region(None, mark.label, raw=mark.coords))  # wholly off the picture: listed, not drawn
            continue
        out.append(region)
    return out


_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*?)(?:\n```|$)", re.S)


def raw_blocks(text: str, convention: Convention | None) -> list[tuple[int, int, int]]:
    """The fenced code blocks of an answer that hold its marks: ``(start, end, count)`` (a block still being
    written runs to the end)."""
    if convention is None or convention.syntax != "json":
        return []
    blocks = []
    for match in _FENCE.finditer(text):
        count = len(_json_marks(match.group(1)))
        if count:
            blocks.append((match.start(), match.end(), count))
    return blocks
