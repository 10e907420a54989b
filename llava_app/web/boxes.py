"""How a mark an answer points with is drawn over its picture: the chat's and the share page's one recipe."""

from __future__ import annotations

#: distinct colours for boxes (Sasha Trubetskoy's list), each readable with white text on it
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324", "#800000",
           "#000075")


def colour(k: int) -> str:
    """The colour of mark ``k`` (0-based) of an answer."""
    return PALETTE[k % len(PALETTE)]


def placement(width: int, height: int, box=None, point=None) -> str:
    """CSS placing a box (x1, y1, x2, y2) or a point (x, y), in the picture's pixels, over a picture shown at any
    size: percentages of the picture's ``width`` and ``height``."""
    width, height = max(1, width), max(1, height)
    if box is not None:
        x1, y1, x2, y2 = box
        return (f"left:{100 * x1 / width:.2f}%;top:{100 * y1 / height:.2f}%;"
                f"width:{100 * (x2 - x1) / width:.2f}%;height:{100 * (y2 - y1) / height:.2f}%")
    x, y = point or (0.0, 0.0)
    return f"left:{100 * x / width:.2f}%;top:{100 * y / height:.2f}%"
