"""Keyframes of a short video (mp4, webm, mov...) as pictures, with PyAV (FFmpeg's decoders).

A clip becomes ``count`` frames evenly spaced in time (the middle of each of ``count``
equal parts, so neither a black first frame nor a missing last one is picked), each
normalised as an uploaded image is and named with its time ("clip.mp4 @ 0:12"). The
clip's size, length and frame size are checked before anything is decoded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from llava_app.messages import Message
from llava_app.storage.images import ImageError, ImageLimits, normalise_image, too_big

Progress = Callable[[float, Message], None]


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on videos; the defaults suit a public demo."""

    max_bytes: int = 20 * 1024 * 1024  # the app passes its upload limit
    max_seconds: float = 300.0
    max_frame_pixels: int = 4096 * 2304  # 4K and a little more


@dataclass(frozen=True)
class VideoFrame:
    """One keyframe: the picture and its time from the start of the clip."""

    image: Image.Image
    seconds: float
    name: str  # "clip.mp4 @ 0:12"


def format_time(seconds: float, tenths: bool = False) -> str:
    """``75.4`` -> ``1:15`` (``1:15.4`` with ``tenths``); hours when there are any."""
    seconds = max(0.0, seconds)
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text}.{int((seconds - whole) * 10)}" if tenths else text


def video_frames(data: bytes, name: str, count: int, limits: VideoLimits = VideoLimits(),
                 image_limits: ImageLimits = ImageLimits(), progress: Progress | None = None) -> list[VideoFrame]:
    """``count`` keyframes of the video in ``data``, in time order, or ``ImageError`` saying why not.

    Args:
        data: the file's bytes (sniffed as a video by the caller).
        name: the file name shown in messages and frame names.
        count: how many frames (fewer when the clip has fewer distinct frames).
        limits: size, length and frame-size bounds.
        image_limits: how each frame is normalised (as an uploaded image).
        progress: called with (fraction done, message) after each frame.
    """
    try:
        import av  # FFmpeg bindings: only when a video arrives
    except ImportError:
        raise ImageError("video.unsupported", name=name) from None
    if len(data) > limits.max_bytes:
        raise too_big(name, len(data), limits.max_bytes)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            return _frames(container, name, max(1, count), limits, image_limits, progress)
    except ImageError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError, MemoryError, EOFError) as exc:
        raise ImageError("video.damaged", name=name, kind=type(exc).__name__) from None


def _frames(container: Any, name: str, count: int, limits: VideoLimits, image_limits: ImageLimits,
            progress: Progress | None) -> list[VideoFrame]:
    if not container.streams.video:
        raise ImageError("video.no_track", name=name)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_frame_pixels:
        raise ImageError("video.frame_size", name=name, width=width, height=height,
                         limit=limits.max_frame_pixels / 1e6)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    duration = _duration(container, stream, start)
    if duration > limits.max_seconds:
        raise ImageError("video.too_long", name=name, length=format_time(duration),
                         limit=format_time(limits.max_seconds))
    tenths = duration / count < 2.0  # close frames need tenths of a second to tell apart
    frames: list[VideoFrame] = []
    seen: set[int] = set()
    for i in range(count):
        target = start + duration * (i + 0.5) / count
        frame = _frame_at(container, stream, target)
        if frame is None or frame.pts in seen:
            continue  # fewer distinct frames than asked for
        seen.add(frame.pts)
        seconds = max(0.0, float(frame.time) - start) if frame.time is not None else target - start
        label = f"{name} @ {format_time(seconds, tenths)}"
        frames.append(VideoFrame(normalise_image(frame.to_image(), image_limits, label), seconds, label))
        if progress is not None:
            progress((i + 1) / count, Message("progress.frame", name=name, number=i + 1, count=count))
    if not frames:
        raise ImageError("video.no_frames", name=name)
    return frames


def _duration(container: Any, stream: Any, start: float) -> float:
    """The clip's length in seconds: from the stream or container header, else from the last packet."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # av.time_base
    last = None  # no length in the header (e.g. a browser's webm recording): read packet times, decode nothing
    for packet in container.demux(stream):
        if packet.pts is not None:
            last = packet.pts if last is None else max(last, packet.pts)
    container.seek(0)
    return max(0.0, float(last * stream.time_base) - start) if last is not None else 0.0


def _frame_at(container: Any, stream: Any, seconds: float) -> Any:
    """The frame nearest to ``seconds`` (the last frame when the clip ends first)."""
    container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)
    last = None
    for frame in container.decode(stream):
        if frame.time is not None and frame.time >= seconds:
            if last is not None and last.time is not None and seconds - last.time < frame.time - seconds:
                return last
            return frame
        last = frame
    return last
