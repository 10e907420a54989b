"""Whatever arrives (a picture, a video, a PDF) as the pictures it becomes.

The kind is read from the content, never the file name. A picture is one picture
(``decode_image``); a video becomes keyframes (``video.video_frames``); a PDF becomes
page images (``pdf.pdf_pages``). ``room`` says how many pictures may come out (what
still fits with the question); a video or PDF that would give more is cut to fit, with
a warning that says how to choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from llava_app.messages import Message
from llava_app.storage.images import ImageError, ImageLimits, decode_image, sniff_format, too_big
from llava_app.storage.pdf import page_count, parse_pages, pdf_pages
from llava_app.storage.video import VideoLimits, video_frames

Progress = Callable[[float, Message], None]
_IMAGE_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")  # ISO files that are pictures
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


@dataclass(frozen=True)
class MediaOptions:
    """The user's choices for videos and PDFs."""

    frames: int = 4  # keyframes taken from each video
    pages: str = ""  # PDF pages, e.g. "1-3,5"; empty: from the first page on, as many as fit


@dataclass(frozen=True)
class Picture:
    """One picture out of an upload, with its display name."""

    image: Image.Image
    name: str  # "photo.png", "clip.mp4 @ 0:12", "report.pdf p. 3"
    video: str = ""  # the clip it is a frame of (frames of one clip are told to the model as such)


@dataclass
class Decoded:
    """The pictures of one file and anything worth telling the user."""

    pictures: list[Picture]
    warnings: list[Message] = field(default_factory=list)


def sniff_kind(head: bytes) -> str | None:
    """``"image"``, ``"video"`` or ``"pdf"`` from a file's first bytes (at least 16, up to 1024), else None."""
    if sniff_format(head[:16]):
        return "image"
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "video"  # mp4, mov, m4v, 3gp
    if head[4:8] in _QUICKTIME_ATOMS or head[:4] == b"\x1a\x45\xdf\xa3":
        return "video"  # older QuickTime; Matroska and WebM
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return None


def decode_media(data: bytes, name: str, room: int, limits: ImageLimits = ImageLimits(),
                 video_limits: VideoLimits = VideoLimits(), options: MediaOptions = MediaOptions(),
                 progress: Progress | None = None) -> Decoded:
    """The pictures a file gives: at most ``room`` of them (``ImageError`` when it gives none).

    Args:
        data: the file's bytes.
        name: its display name.
        room: how many pictures may still join (at least 1).
        limits: how each picture is checked and normalised.
        video_limits: size, length and frame size of videos.
        options: how many keyframes per video, which PDF pages.
        progress: called with (fraction, message) while a video or PDF is decoded.
    """
    kind = sniff_kind(data[:1024])
    if kind == "video":
        return _video(data, name, room, limits, video_limits, options, progress)
    if kind == "pdf":
        return _pdf(data, name, room, limits, options, progress)
    if kind is None and data and sniff_format(data[:16]) is None:
        raise ImageError("media.unknown", name=name)
    return Decoded([Picture(decode_image(data, limits, name), name)])


def _video(data: bytes, name: str, room: int, limits: ImageLimits, video_limits: VideoLimits,
           options: MediaOptions, progress: Progress | None) -> Decoded:
    count = min(max(1, options.frames), room)
    frames = video_frames(data, name, count, video_limits, limits, progress)
    warnings = []
    if options.frames > room:
        warnings.append(Message("media.frames_taken", name=name, count=count, asked=options.frames))
    return Decoded([Picture(f.image, f.name, video=name) for f in frames], warnings)


def _pdf(data: bytes, name: str, room: int, limits: ImageLimits, options: MediaOptions,
         progress: Progress | None) -> Decoded:
    if len(data) > limits.max_bytes:
        raise too_big(name, len(data), limits.max_bytes)
    total = page_count(data, name)
    if total == 0:
        raise ImageError("pdf.no_pages", name=name)
    try:
        pages = parse_pages(options.pages, total)
    except ImageError as exc:
        raise ImageError("upload.named", name=name, problem=exc.message) from None
    warnings = []
    if len(pages) > room:
        rest = pages[room:]
        pages = pages[:room]
        warnings.append(Message("media.pages_taken", name=name, total=total, added=_page_list(pages), room=room,
                                others=_page_list(rest[:room])))
    return Decoded([Picture(p.image, p.name) for p in pdf_pages(data, name, pages, limits, progress)], warnings)


def _page_list(pages: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"pages 1-3,5"``."""
    runs: list[list[int]] = []
    for p in pages:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    text = ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"page{'s' if len(pages) > 1 else ''} {text}"
