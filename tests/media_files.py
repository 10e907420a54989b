"""Videos and PDFs the tests make themselves: a clip written with PyAV, a PDF written with Pillow."""

from __future__ import annotations

import io

from PIL import Image

#: page colours of ``make_pdf`` (page 1 is red, page 2 green, ...)
PAGE_COLOURS = ["red", "green", "blue", "yellow", "white", "black"]


def make_video(seconds: float = 4.0, fps: int = 10, size: tuple[int, int] = (64, 48), fmt: str = "mp4",
               codec: str = "mpeg4") -> bytes:
    """A clip whose red channel rises with time (0 at the start, ~255 at the end) and blue falls."""
    import av
    import numpy as np

    frames = max(1, int(seconds * fps))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[..., 0] = round(255 * i / max(1, frames - 1))
            pixels[..., 2] = 255 - pixels[..., 0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def make_pdf(pages: int = 3, size_pt: tuple[int, int] = (612, 792)) -> bytes:
    """A PDF of ``pages`` plain-coloured pages (``PAGE_COLOURS``), Letter size at 72 dpi."""
    images = [Image.new("RGB", size_pt, PAGE_COLOURS[i % len(PAGE_COLOURS)]) for i in range(pages)]
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=72)
    return buf.getvalue()


def encrypt_pdf(data: bytes) -> bytes:
    """``data`` with a standard-security /Encrypt entry whose user password is not the empty one."""
    entry = (b"/Encrypt << /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>\n"
             b"/ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">]\n")
    assert b"trailer\n<<\n" in data
    return data.replace(b"trailer\n<<\n", b"trailer\n<<\n" + entry, 1)
