"""Pages of a PDF as pictures, with pypdfium2 (PDFium, the PDF engine of Chromium).

Each chosen page is rendered straight at the size the model works at (no larger: a
page's text is as sharp as the model can see it, and no pixels are wasted), then
normalised as an uploaded image is and named "report.pdf p. 3".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from llava_app.messages import Message
from llava_app.storage.images import ImageError, ImageLimits, normalise_image

Progress = Callable[[float, Message], None]
_PASSWORD_ERROR = 4  # FPDF_ERR_PASSWORD
# PDFium is not thread-safe: one document at a time in this process (pypdfium2's docs say so).
_PDFIUM = threading.Lock()


@dataclass(frozen=True)
class PdfPage:
    """One rendered page: the picture and its 1-based number."""

    image: Image.Image
    number: int
    name: str  # "report.pdf p. 3"


def parse_pages(text: str, page_count: int) -> list[int]:
    """1-based page numbers from a selection like ``"1-3,5"`` (``""``: all), in the order given, once each."""
    if not text.strip():
        return list(range(1, page_count + 1))
    pages: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            lo = int(first) if first else 1
            hi = (int(last) if last else page_count) if dash else lo
        except ValueError:
            raise ImageError("pdf.bad_range", part=part) from None
        if not 1 <= lo <= hi <= page_count:
            raise ImageError("pdf.page_missing", part=part, count=page_count)
        pages += [p for p in range(lo, hi + 1) if p not in pages]
    return pages


def render_scale(width_pt: float, height_pt: float, limits: ImageLimits) -> float:
    """Pixels per PDF point that give the model's resolution (at most ``max_side`` on the long side)."""
    scale = limits.max_side / max(width_pt, height_pt, 1.0)
    if limits.model_size is not None:
        w, h = max(1, round(width_pt * scale)), max(1, round(height_pt * scale))
        fit_w, _ = limits.model_size.fit(w, h)
        scale *= fit_w / w
    return scale


def page_count(data: bytes, name: str) -> int:
    """How many pages the PDF has (``ImageError`` when it cannot be opened)."""
    with _PDFIUM:
        document = _open(data, name)
        try:
            return len(document)
        finally:
            document.close()


def pdf_pages(data: bytes, name: str, pages: list[int], limits: ImageLimits = ImageLimits(),
              progress: Progress | None = None) -> list[PdfPage]:
    """Render the given 1-based ``pages`` of the PDF in ``data``, or raise ``ImageError`` saying why not."""
    pdfium = _pdfium(name)
    out: list[PdfPage] = []
    with _PDFIUM:
        document = _open(data, name)
        try:
            for i, number in enumerate(pages):
                label = f"{name} p. {number}"
                page = document[number - 1]
                try:
                    width, height = page.get_size()
                    if min(width, height) <= 0 or not math.isfinite(width * height):
                        raise ImageError("pdf.no_size", label=label)
                    bitmap = page.render(scale=render_scale(width, height, limits))
                    image = bitmap.to_pil().convert("RGB")
                finally:
                    page.close()
                out.append(PdfPage(normalise_image(image, limits, label), number, label))
                if progress is not None:
                    progress((i + 1) / len(pages), Message("progress.page", name=name, number=number))
        except pdfium.PdfiumError as exc:
            raise ImageError("pdf.render_failed", name=name, reason=str(exc)) from None
        finally:
            document.close()
    return out


def _open(data: bytes, name: str):
    """The document (caller holds ``_PDFIUM`` and closes it)."""
    pdfium = _pdfium(name)
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _PASSWORD_ERROR:
            raise ImageError("pdf.encrypted", name=name) from None
        raise ImageError("pdf.damaged", name=name) from None


def _pdfium(name: str):
    """The pypdfium2 module, imported when a PDF arrives."""
    try:
        import pypdfium2
    except ImportError:
        raise ImageError("pdf.unsupported", name=name) from None
    return pypdfium2
