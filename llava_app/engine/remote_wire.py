"""What goes over the wire to an OpenAI-compatible server (used by ``remote.py``).

Every turn sends the whole conversation, every picture a PNG data URL: six photos of 2,048 px are
about 55 MB of JSON a turn. Each picture's data URL is made once and kept as the JSON bytes it is
(``DataURLs``), and the request body is the JSON of the rest with those bytes put in place
(``json_body``), so a turn neither reads and encodes its pictures again nor has the openai client
escape 55 MB of base64 into JSON (``python -m llava_app.benchmarks.remote_turns`` measures it).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
from collections import OrderedDict
from typing import Any

#: the data URLs kept, all conversations together: a few conversations' worth of six large photos
DATA_URL_BYTES = 256 * 1024 * 1024


class DataURLs:
    """PNG files as base64 data URLs (ASCII bytes, JSON-safe as they are), the most recently used kept.

    The pictures of the request being made are never evicted for each other: a conversation whose
    pictures outgrow the budget keeps them all while it is sent (least-recently-used eviction would
    otherwise miss every picture on every turn, as a conversation sends them in the same order).
    """

    def __init__(self, max_bytes: int = DATA_URL_BYTES):
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, sha256: str, path: str, keep: frozenset[str] = frozenset()) -> bytes:
        """The data URL of picture ``sha256`` (stored at ``path``); ``keep``: pictures not to evict now."""
        with self._lock:
            url = self._items.get(sha256)
            if url is not None:
                self._items.move_to_end(sha256)
                return url
        with open(path, "rb") as fh:
            url = b"data:image/png;base64," + base64.b64encode(fh.read())
        with self._lock:
            if sha256 not in self._items:
                self._items[sha256] = url
                self._size += len(url)
            for old in [k for k in self._items if k not in keep and k != sha256]:
                if self._size <= self._max_bytes:
                    break
                self._size -= len(self._items.pop(old))
        return url

    def clear(self) -> None:
        """Forget every data URL made so far."""
        with self._lock:
            self._items.clear()
            self._size = 0


def json_body(kwargs: dict[str, Any], pictures: list[bytes], mark: str) -> bytes:
    """``kwargs`` as JSON bytes, the string ``f"{mark}{i}"`` replaced by picture ``i``'s data URL."""
    raw = json.dumps(kwargs, separators=(",", ":")).encode("ascii")  # \u-escaped: even a lone surrogate goes
    pieces = re.split(re.escape(mark.encode("ascii")) + rb"(\d+)", raw)
    out = pieces[:1]
    for k in range(1, len(pieces), 2):
        out += [pictures[int(pieces[k])], pieces[k + 1]]
    return b"".join(out)


def new_mark() -> str:
    """A placeholder no question can spell (random per request), followed by a picture's index."""
    return f"llava-picture-{secrets.token_hex(12)}-"


def abort(stream: Any) -> None:
    """Close a streaming response at once, even while another thread is blocked reading it.

    Closing the socket alone does not wake a blocked ``recv`` (nor tell the server);
    shutting it down does both, so the server sees the disconnect and stops generating.
    """
    response = getattr(stream, "response", None)
    extensions = getattr(response, "extensions", None) or {}
    network = extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - closing is best-effort
        pass
