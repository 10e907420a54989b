"""Files and URLs into a conversation: each read (or fetched), sniffed, decoded, stored and labelled.

A picture becomes one image of the conversation; a video its keyframes ("clip.mp4 @ 0:12"),
a PDF its pages ("report.pdf p. 3"), as many as still go with the question. The service
(``ChatService.add_images`` / ``add_urls``) decides the room; this module does the rest,
the same way for every source.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.storage.fetch import FetchPolicy, fetch_url, url_name
from llava_app.storage.images import ImageError, ImageLimits, ImageStore, too_big
from llava_app.storage.media import MediaOptions, decode_media, sniff_kind
from llava_app.storage.video import VideoLimits

log = logging.getLogger(__name__)

Progress = Callable[[float, Message], None]
#: a source: its display name and a function that returns its bytes (raising ``UserError`` when it cannot)
Source = tuple[str, Callable[[], bytes]]


@dataclass
class UploadResult:
    """What became of a batch of uploads: the new labels and a message per refused file."""

    added: list[str]
    skipped: list[str]
    errors: list[Message | str]
    warnings: list[Message | str] = dataclasses.field(default_factory=list)  # accepted, but worth telling the user


@dataclass(frozen=True)
class Intake:
    """How sources are read and decoded: the limits, and the URL policy (None: URLs are not fetched)."""

    store: ImageStore
    video_limits: VideoLimits = VideoLimits()
    url_policy: FetchPolicy | None = None
    options: MediaOptions = MediaOptions()

    def file_sources(self, files: Iterable[tuple[str, str]], limits: ImageLimits) -> list[Source]:
        """Uploaded files ``(path, display name)`` as sources."""
        return [(name or os.path.basename(path), _file_reader(path, name or os.path.basename(path), limits,
                                                              self.video_limits))
                for path, name in files]

    def url_sources(self, urls: Iterable[str]) -> list[Source]:
        """URLs as sources (fetched when read); refused at once when this server does not fetch URLs."""
        urls = [u.strip() for u in urls if u and u.strip()]
        if urls and self.url_policy is None:
            log.info("a link was refused: this server fetches no URLs (start it with --image-urls to allow them)")
            raise UserError("upload.no_urls")
        return [(_url_label(u), _url_reader(u, self.url_policy)) for u in urls]

    def attach(self, conv: Conversation, sources: list[Source], room: Callable[[], int], limits: ImageLimits,
               max_images: int | None, options: MediaOptions | None = None,
               progress: Progress | None = None) -> UploadResult:
        """Decode each source into pictures (at most ``room()`` each) and add them to ``conv``."""
        result = UploadResult([], [], [])
        options = options or self.options
        for name, read in sources:
            try:
                decoded = decode_media(read(), name, room(), limits, self.video_limits, options, progress)
            except UserError as exc:
                result.errors.append(exc.message if isinstance(exc, ImageError)
                                     else Message("upload.named", name=name, problem=exc.message))
                continue
            result.warnings += decoded.warnings
            for picture in decoded.pictures:
                try:
                    stored = self.store.put(picture.image)
                    ref, added = conv.add_image(stored.sha256, stored.path, stored.width, stored.height,
                                                picture.name, max_images=max_images, video=picture.video)
                except UserError as exc:
                    result.errors.append(Message("upload.named", name=picture.name, problem=exc.message))
                    break
                (result.added if added else result.skipped).append(ref.label)
                if not added and len(decoded.pictures) == 1:  # a repeated frame or page is left out quietly
                    result.errors.append(Message("upload.duplicate", name=name, label=ref.label))
        return result


def _file_reader(path: str, name: str, limits: ImageLimits, video_limits: VideoLimits) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with open(path, "rb") as fh:
                kind = sniff_kind(fh.read(1024))
                size = os.fstat(fh.fileno()).st_size
                limit = video_limits.max_bytes if kind == "video" else limits.max_bytes
                if size > limit:
                    raise too_big(name, size, limit)
                fh.seek(0)
                return fh.read(limit + 1)
        except OSError as exc:
            raise ImageError("upload.unreadable", name=name) from exc
    return read


def fetch_bytes(url: str, policy: FetchPolicy) -> bytes:
    """The body at ``url``, fetched under ``policy`` (``FetchError``, a ``UserError``, says why not)."""
    return fetch_url(url, policy).data


def _url_reader(url: str, policy: FetchPolicy) -> Callable[[], bytes]:
    return lambda: fetch_bytes(url, policy)


def _url_label(url: str) -> str:
    try:
        return url_name(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is refused when read, with the reason
        return url[:80]


def media_options(frames: float | None, pages: str | None, limit: int) -> MediaOptions:
    """The user's choices for videos and PDFs from the page: keyframes (1 to ``limit``) and a page selection."""
    return MediaOptions(frames=max(1, min(int(limit), int(frames or 1))), pages=(pages or "").strip())
