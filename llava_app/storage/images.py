"""Safe decoding and normalisation of whatever a user uploads.

Every image enters the app through ``decode_image``: formats are recognised by content
(an allow-list of raster formats), decompression bombs are refused before pixels are
decoded, the file is decoded in full (truncated files fail here, not mid-generation),
EXIF orientation is applied, every mode becomes RGB (alpha over white), animations
give their first frame, and very large images are downscaled. ``ImageStore`` keeps the
normalised images as PNG files named by a hash of their pixels; several app processes may
share one store (``leases`` says how none deletes a file another still uses).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from llava_app.errors import UserError
from llava_app.storage.leases import FilesLock, Leases

# Magic bytes -> format name. Anything else (TIFF, SVG, HTML, PDF, text...) is refused.
_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
]


class ImageError(UserError):
    """An upload that is not a usable image."""


DEFAULT_MAX_PIXELS = 40_000_000

# Pillow's own bomb guard stays on, at our limit rather than its default of ~89 MP: it warns
# above this and refuses twice this before decoding, for every image the process opens
# (ours are checked earlier and more strictly in ``decode_image``).
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on uploads; the defaults suit a public demo."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse before decoding; Pillow's own limit stays on too
    max_side: int = 2048  # larger images are downscaled to this longest side
    min_side: int = 4
    max_aspect: float = 50.0
    #: the resolution the model's processor uses; larger images are stored no larger than that
    model_size: ModelImageSize | None = None


def sniff_format(head: bytes) -> str | None:
    """The raster format of a file from its first bytes, or None when not allowed."""
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: scale the real range to 0..255.
        img = img.convert("F") if img.mode != "F" else img
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def megabytes(n: int) -> str:
    """A size as the limits are given (``--max-upload-mb 20`` is 20 x 2**20 bytes): "27 MB", "1.5 MB"."""
    mb = n / 2**20
    if mb < 0.01:
        return f"{n / 1024:.1f} KB"
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB" if mb >= 1 else f"{mb:.2g} MB"


def too_big(name: str, size: int, limit: int) -> ImageError:
    """The message for a file over the upload limit, with both sizes."""
    return ImageError("image.too_big", name=name, size=megabytes(size), limit=megabytes(limit))


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), name: str = "upload") -> Image.Image:
    """Decode upload bytes into a normalised RGB image, or raise ``ImageError`` saying why."""
    if len(data) > limits.max_bytes:
        raise too_big(name, len(data), limits.max_bytes)
    if not data:
        raise ImageError("image.empty", name=name)
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ImageError("image.not_image", name=name)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
        w, h = img.size
        if w * h > limits.max_pixels:
            raise ImageError("image.too_many_pixels", name=name, width=w, height=h, limit=limits.max_pixels / 1e6)
        img.seek(0)  # first frame of an animation
        img.load()  # full decode: truncated or corrupt files fail here
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        # Pillow refused the header's size before we could read it (far beyond our limit).
        raise ImageError("image.bomb", name=name, limit=limits.max_pixels / 1e6) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageError("image.damaged", name=name, format=fmt) from exc
    return normalise_image(img, limits, name)


def normalise_image(img: Image.Image, limits: ImageLimits = ImageLimits(), name: str = "upload") -> Image.Image:
    """Check a decoded RGB image's shape and scale it to the stored size (uploads, video frames, PDF pages)."""
    w, h = img.size
    if min(w, h) < limits.min_side or max(w, h) / min(w, h) > limits.max_aspect:
        raise ImageError("image.shape", name=name, width=w, height=h, min_side=limits.min_side,
                         aspect=limits.max_aspect)
    if max(w, h) > limits.max_side:
        img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    if limits.model_size is not None:
        size = limits.model_size.fit(*img.size)
        if size != img.size:
            img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def load_image_file(path: str | os.PathLike, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """``decode_image`` on a file, reading no more than the size limit allows."""
    p = Path(path)
    name = p.name
    try:
        size = p.stat().st_size
        if size > limits.max_bytes:
            return decode_image(b"\0" * (limits.max_bytes + 1), limits, name)  # same message, no big read
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError("upload.unreadable", name=name) from exc
    return decode_image(data, limits, name)


def image_digest(img: Image.Image) -> str:
    """A content hash of the normalised pixels (same picture, same hash, whatever the file)."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class StoredImage:
    """A normalised image on disk."""

    sha256: str
    path: str
    width: int
    height: int


class ImageStore:
    """Normalised images as PNG files named by their pixel hash, with a small in-memory LRU.

    ``clock`` (wall-clock time, compared with file times) is for tests.
    """

    def __init__(self, root: str | os.PathLike, cache_items: int = 64, *, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[str, Image.Image] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()
        self._files_lock = FilesLock(self.root / ".lock")  # writers and ``sweep``, across processes too
        self._clock = clock
        #: what this process's conversations use, for the sweeps of other processes on this store
        self.leases = Leases(self.root / "instances", clock=clock)

    def path_for(self, sha256: str) -> Path:
        """Where the image with this hash lives."""
        return self.root / sha256[:2] / f"{sha256}.png"

    def put(self, img: Image.Image) -> StoredImage:
        """Store an image (atomically; a no-op when already stored)."""
        sha = image_digest(img)
        path = self.path_for(sha)
        self.leases.ensure()  # other processes' sweeps spare new files while this one lives
        with self._files_lock:  # exists-and-touch is atomic against a sweep
            stored = path.exists() and _touch(path)
        if not stored:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    img.save(fh, format="PNG")
                with self._files_lock:
                    os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        self._remember(sha, img)
        return StoredImage(sha256=sha, path=str(path), width=img.width, height=img.height)

    def open(self, sha256: str) -> Image.Image:
        """The stored image as RGB (from memory when recently used)."""
        with self._lock:
            img = self._cache.get(sha256)
            if img is not None:
                self._cache.move_to_end(sha256)
                return img
        try:
            with Image.open(self.path_for(sha256)) as f:
                img = f.convert("RGB")
        except FileNotFoundError:
            raise ImageError("image.gone") from None
        self._remember(sha256, img)
        return img

    def _remember(self, sha: str, img: Image.Image) -> None:
        with self._lock:
            self._cache[sha] = img
            self._cache.move_to_end(sha)
            while len(self._cache) > self._cache_items:
                self._cache.popitem(last=False)

    def link_in(self, sha256: str, source: str | os.PathLike) -> Path:
        """Put an already normalised PNG (e.g. from the saved conversations) in the store without re-encoding."""
        path = self.path_for(sha256)
        self.leases.ensure()
        with self._files_lock:
            if path.exists() and _touch(path):
                return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            os.link(source, tmp)  # no copy where both live on one file system
        except OSError:
            shutil.copyfile(source, tmp)
        with self._files_lock:
            os.replace(tmp, path)
        return path

    def sweep(self, keep: set[str], grace_s: float = 60.0) -> int:
        """Delete stored images no live conversation of any instance uses; returns how many went.

        ``keep`` (the hashes this process's conversations hold) becomes this process's
        lease; the hashes of other instances' fresh leases are kept too. Files written or
        re-put within ``grace_s`` stay (an upload is stored a moment before its
        conversation holds it), and within the longest lease window of the other instances.
        """
        self.leases.write(keep)
        others = self.leases.others()
        keep = set(keep).union(*(lease.hashes for lease in others))
        cutoff = self._clock() - max([grace_s, *(lease.stale_after for lease in others)])
        removed = 0
        for path in self.root.glob("*/*.png"):
            sha = path.stem
            if sha in keep:
                continue
            with self._files_lock:
                try:
                    if path.stat().st_mtime > cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
            removed += 1
            with self._lock:
                self._cache.pop(sha, None)
        for tmp in self.root.glob("*/*.tmp"):  # left by a crash mid-write
            try:
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                pass
        return removed

    def files(self) -> list[Path]:
        """Every stored image file."""
        return sorted(self.root.glob("*/*.png"))



@dataclass(frozen=True)
class ModelImageSize:
    """The resolution a model's image processor works at, to store no more pixels than it uses.

    ``base`` is the ``(height, width)`` an image is resized to cover (a ``shortest_edge``
    resize has ``width == height == S``: both sides must stay >= S); ``tiles`` are the
    any-resolution grids (LLaVA-NeXT/OneVision ``image_grid_pinpoints``), each of which an
    image must still fill along one side, so the processor picks the same grid and
    makes the same number of image tokens. ``floor`` keeps the shorter side legible in
    the gallery (tiny test models work at 32 px).
    """

    base: tuple[int, int]
    tiles: tuple[tuple[int, int], ...] = ()
    floor: int = 336

    @classmethod
    def from_processor(cls, image_processor: Any, floor: int = 336) -> ModelImageSize | None:
        """Read ``size``/``crop_size``/``image_grid_pinpoints`` of a transformers image processor."""

        def get(obj: Any, key: str) -> Any:
            return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

        size = getattr(image_processor, "size", None)
        if size is None:
            return None
        if get(size, "longest_edge") and getattr(image_processor, "merge_size", None):
            return None  # Qwen-VL: pixel counts (min, max area), pictures read at their own size: store as is
        if get(size, "shortest_edge"):
            base = (int(get(size, "shortest_edge")),) * 2
        elif get(size, "height") and get(size, "width"):
            base = (int(get(size, "height")), int(get(size, "width")))
        else:
            return None  # a resize rule we do not know (e.g. longest_edge): store as is
        tiles = tuple((int(h), int(w)) for h, w in (getattr(image_processor, "image_grid_pinpoints", None) or []))
        return cls(base=base, tiles=tiles, floor=floor)

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` to store: downscaled, same aspect, as long as nothing the model sees is lost."""
        needs = [self.base[1] / width, self.base[0] / height, self.floor / min(width, height)]
        needs += [min(w / width, h / height) for h, w in self.tiles]
        scale = max(needs)
        if scale >= 1.0:
            return width, height
        # Round up (less a float hair, so 1008.0000001 is 1008): never below what the model needs.
        return min(width, math.ceil(width * scale - 1e-6)), min(height, math.ceil(height * scale - 1e-6))


def _touch(path: Path) -> bool:
    """Refresh a file's mtime; False when it is gone."""
    try:
        os.utime(path)
        return True
    except OSError:
        return False
