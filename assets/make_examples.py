"""Draw the page's example images with Pillow (nothing from the web): python assets/make_examples.py [OUT_DIR].

A bar chart, a receipt to read, a diagram, and a scene of simple shapes with a
changed copy for comparing two images. Drawn from fixed numbers, so a rerun gives the
same pictures; the committed PNGs in this folder are its output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
INK = (33, 37, 41)
PAPER = (255, 255, 255)


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (a scalable one where FreeType is available)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def centered(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], text: str, size: int,
             fill=INK) -> None:
    """Text centred in ``box``."""
    f = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
    x = box[0] + (box[2] - box[0] - (right - left)) / 2 - left
    y = box[1] + (box[3] - box[1] - (bottom - top)) / 2 - top
    draw.text((x, y), text, font=f, fill=fill)


def bar_chart() -> Image.Image:
    """Cups of coffee sold per month: six bars with their values, axes and a title."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"]
    sold = [120, 95, 150, 180, 135, 210]
    colors = [(66, 133, 244), (66, 133, 244), (66, 133, 244), (66, 133, 244), (66, 133, 244), (234, 67, 53)]
    img = Image.new("RGB", (720, 480), PAPER)
    d = ImageDraw.Draw(img)
    centered(d, (0, 10, 720, 60), "Coffee cups sold per month", 28)
    x0, y0, x1, y1 = 80, 80, 690, 420  # plot area
    top = 250
    for v in range(0, top + 1, 50):
        y = y1 - (y1 - y0) * v / top
        d.line((x0, y, x1, y), fill=(225, 225, 225), width=1)
        d.text((x0 - 10, y), str(v), font=font(16), fill=INK, anchor="rm")
    d.line((x0, y0, x0, y1), fill=INK, width=2)
    d.line((x0, y1, x1, y1), fill=INK, width=2)
    slot = (x1 - x0) / len(months)
    for i, (month, value, color) in enumerate(zip(months, sold, colors, strict=False)):
        left, right = x0 + slot * i + 18, x0 + slot * (i + 1) - 18
        y = y1 - (y1 - y0) * value / top
        d.rectangle((left, y, right, y1), fill=color)
        centered(d, (left, y - 30, right, y - 4), str(value), 18)
        centered(d, (left, y1 + 6, right, y1 + 34), month, 18)
    return img


def receipt() -> Image.Image:
    """A shop receipt: header, items with quantities and prices, subtotal, tax and total."""
    items = [("Espresso", 2, 2.80), ("Croissant", 1, 3.20), ("Orange juice", 1, 4.50), ("Blueberry muffin", 2, 2.95)]
    img = Image.new("RGB", (460, 580), (250, 248, 240))
    d = ImageDraw.Draw(img)
    centered(d, (0, 20, 460, 60), "CORNER CAFE", 34)
    centered(d, (0, 62, 460, 86), "12 Harbour Street, Portsmouth", 16)
    centered(d, (0, 88, 460, 112), "2024-03-14  08:42   Receipt #1047", 16)
    d.line((30, 126, 430, 126), fill=INK, width=2)
    y = 142
    body = font(20)
    subtotal = 0.0
    for name, qty, price in items:
        line_total = qty * price
        subtotal += line_total
        d.text((34, y), f"{qty} x {name}", font=body, fill=INK)
        d.text((426, y), f"{line_total:.2f}", font=body, fill=INK, anchor="ra")
        y += 38
    tax = round(subtotal * 0.20, 2)
    d.line((30, y + 6, 430, y + 6), fill=INK, width=1)
    y += 20
    for label, value in [("Subtotal", subtotal), ("VAT 20%", tax)]:
        d.text((34, y), label, font=body, fill=INK)
        d.text((426, y), f"{value:.2f}", font=body, fill=INK, anchor="ra")
        y += 34
    d.line((30, y + 4, 430, y + 4), fill=INK, width=2)
    big = font(28)
    d.text((34, y + 16), "TOTAL", font=big, fill=INK)
    d.text((426, y + 16), f"GBP {subtotal + tax:.2f}", font=big, fill=INK, anchor="ra")
    y += 80
    d.text((34, y), "Paid by card  **** 4821", font=font(18), fill=INK)
    centered(d, (0, y + 60, 460, y + 90), "Thank you for visiting!", 20)
    for x in range(0, 460, 20):  # torn paper edge
        d.polygon([(x, 580), (x + 10, 568), (x + 20, 580)], fill=PAPER)
    return img


def diagram() -> Image.Image:
    """A flow diagram: four labelled boxes joined by arrows, with a loop back."""
    img = Image.new("RGB", (900, 340), PAPER)
    d = ImageDraw.Draw(img)
    centered(d, (0, 10, 900, 50), "How a question is answered", 26)
    steps = ["Upload photos", "Check & resize", "Ask a question", "Model answers"]
    fills = [(232, 240, 254), (230, 244, 234), (254, 247, 224), (252, 232, 230)]
    boxes = []
    for i, (label, fill) in enumerate(zip(steps, fills, strict=False)):
        left = 30 + i * 220
        box = (left, 110, left + 170, 200)
        d.rounded_rectangle(box, radius=16, fill=fill, outline=INK, width=3)
        centered(d, box, label, 20)
        boxes.append(box)
    for a, b in zip(boxes, boxes[1:], strict=False):
        y = (a[1] + a[3]) / 2
        d.line((a[2] + 4, y, b[0] - 12, y), fill=INK, width=4)
        d.polygon([(b[0] - 4, y), (b[0] - 18, y - 9), (b[0] - 18, y + 9)], fill=INK)
    # follow-up questions loop from the answer back to asking
    left_x, right_x = (boxes[2][0] + boxes[2][2]) / 2, (boxes[3][0] + boxes[3][2]) / 2
    d.line((right_x, 204, right_x, 270), fill=INK, width=3)
    d.line((right_x, 270, left_x, 270), fill=INK, width=3)
    d.line((left_x, 270, left_x, 214), fill=INK, width=3)
    d.polygon([(left_x, 204), (left_x - 9, 218), (left_x + 9, 218)], fill=INK)
    centered(d, (left_x, 274, right_x, 304), "follow-up question", 18)
    return img


def scene(changed: bool = False) -> Image.Image:
    """A house, a tree, the sun and a ball on grass; ``changed`` alters four things."""
    img = Image.new("RGB", (640, 440), (135, 206, 235))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 300, 640, 440), fill=(76, 175, 80))  # grass
    if changed:
        d.ellipse((40, 30, 120, 110), fill=(245, 245, 220))  # a moon instead of the sun
        d.ellipse((64, 22, 144, 102), fill=(135, 206, 235))
    else:
        d.ellipse((500, 40, 590, 130), fill=(255, 200, 0))  # sun
    d.rectangle((220, 190, 400, 320), fill=(205, 92, 92))  # house
    d.polygon([(200, 190), (310, 100), (420, 190)], fill=(120, 60, 40))  # roof
    d.rectangle((290, 250, 330, 320), fill=(90, 50, 30))  # door
    window = (240, 210, 280, 245)
    d.rectangle(window, fill=(255, 235, 130) if changed else (200, 230, 255), outline=INK, width=2)
    d.rectangle((470, 230, 490, 330), fill=(110, 70, 40))  # tree trunk
    d.ellipse((430, 150, 530, 250), fill=(34, 139, 34))  # tree crown
    if changed:
        d.rectangle((560, 260, 574, 330), fill=(110, 70, 40))  # a second, smaller tree
        d.ellipse((530, 205, 604, 279), fill=(46, 125, 50))
    ball = (90, 330, 140, 380)
    d.ellipse(ball, fill=(30, 90, 220) if changed else (220, 30, 30))
    return img


IMAGES = {
    "bar_chart.png": bar_chart,
    "receipt.png": receipt,
    "diagram.png": diagram,
    "scene.png": lambda: scene(changed=False),
    "scene_changed.png": lambda: scene(changed=True),
}


def main(out_dir: str | Path = HERE) -> list[Path]:
    """Write every example image into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in IMAGES.items():
        path = out / name
        draw().save(path, format="PNG")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in main(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print(p)
