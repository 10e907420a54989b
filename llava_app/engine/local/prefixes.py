"""Several cached prefixes per session, one per branch of its conversation, under one byte budget.

A conversation whose user edits turn 3 of 6 asks for a prompt that shares turns 1-2 with
the cached one and then parts from it. The cache it parts from still stands for the other
branch (the user may switch back and ask there), so it is not cropped in place: the shared
part is copied into a new cache for the new branch, and the old one stays until the budget
needs its bytes. A prompt that extends a cached prefix whole (the next question on the same
branch) takes that cache over and grows it, as before, and so does one that parts from it
without starting a branch (Undo, Stop, an answer tokenised anew): the cache is cropped in
place. Which cache a prompt uses is decided by content (the longest usable common prefix);
the request only says whether it starts a branch (``ChatRequest.new_branch``).

torch and transformers are imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llava_app.engine.local.lru import ByteLRU, cache_nbytes

#: the most prefixes kept for one session (its least recently used go first)
PER_SESSION = 8


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's placeholder tokens lie in a prompt: ``ids[start:stop]``."""

    start: int
    stop: int
    sha256: str


@dataclass
class CachedPrefix:
    """A session's KV cache and exactly what it covers: ``ids`` (1-D, CPU) and the image spans."""

    ids: Any  # torch.LongTensor, 1-D, on the CPU
    spans: tuple[ImageSpan, ...]
    cache: Any  # transformers DynamicCache on the model's device
    nbytes: int = 0


def common_prefix(cached_ids, cached_spans: Iterable[ImageSpan], ids, spans: Iterable[ImageSpan]) -> int:
    """How many leading tokens of ``ids`` the cache may stand for.

    Token ids must be equal, and an image whose tokens start inside the prefix must be
    the same picture at the same place in both (image tokens all share one id, so the
    ids alone cannot tell two pictures apart). A prefix never ends inside an image: it
    is cut back to the image's start so the image is fed whole.
    """
    import torch

    n = min(int(cached_ids.numel()), int(ids.numel()))
    if n == 0:
        return 0
    diff = torch.nonzero(cached_ids[:n] != ids[:n])
    if diff.numel():
        n = int(diff[0, 0])
    cached = {(s.start, s.stop): s.sha256 for s in cached_spans}
    for span in spans:  # in prompt order
        if span.start >= n:
            break
        if span.stop > n or cached.get((span.start, span.stop)) != span.sha256:
            return span.start
    return n


def usable_prefix(entry: CachedPrefix, ids, spans: tuple[ImageSpan, ...]) -> int:
    """The tokens of ``ids`` that ``entry`` may stand for: the common prefix, less at least one token
    (fed to get the next token's logits), never ending inside an image; 0 when nothing is usable."""
    n = common_prefix(entry.ids, entry.spans, ids, spans)
    n = min(n, int(ids.numel()) - 1)
    n = min([n] + [s.start for s in spans if s.start < n < s.stop])
    return n if n > 0 and entry.cache.get_seq_length() >= n else 0


def copy_prefix(cache, n: int, new_cache):
    """``new_cache`` holding copies of the first ``n`` positions of every layer of ``cache``."""
    for i, layer in enumerate(cache.layers):
        new_cache.update(layer.keys[..., :n, :].clone(), layer.values[..., :n, :].clone(), i)
    return new_cache


class SessionPrefixes:
    """The sessions' cached prefixes: up to ``PER_SESSION`` each, all within ``budget_bytes`` (thread-safe).

    Read like a map of sessions (``in``, ``len``, ``keys``); ``take`` finds the best prefix for a prompt.
    """

    def __init__(self, budget_bytes: int, per_session: int = PER_SESSION):
        self._lru = ByteLRU[tuple[str, int], CachedPrefix](budget_bytes)
        self.per_session = per_session
        self._serial = itertools.count(1)
        #: how many prompts were served by copying a prefix another branch keeps (diagnostics)
        self.copies = 0

    @property
    def budget(self) -> int:
        return self._lru.budget

    @budget.setter
    def budget(self, value: int) -> None:
        """A new budget; the least recently used prefixes go at once until the rest fit."""
        self._lru.budget = value
        self._lru.trim()

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    def _entries(self, session_id: str) -> list[tuple[str, int]]:
        return [k for k in self._lru.keys() if k[0] == session_id]

    def prefixes(self, session_id: str) -> int:
        """How many prefixes this session holds."""
        return len(self._entries(session_id))

    def session_bytes(self, session_id: str) -> int:
        """Bytes the session's prefixes hold."""
        return sum(e.nbytes for k in self._entries(session_id) if (e := self._lru.peek(k)) is not None)

    def keys(self) -> list[str]:
        """Sessions from least to most recently used."""
        order: dict[str, None] = {}
        for sid, _ in self._lru.keys():
            order.pop(sid, None)
            order[sid] = None
        return list(order)

    def __contains__(self, session_id: object) -> bool:
        return any(k[0] == session_id for k in self._lru.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def put(self, session_id: str, entry: CachedPrefix, nbytes: int) -> bool:
        """Keep one more prefix for the session; False when it alone is larger than the budget."""
        ok = self._lru.put((session_id, next(self._serial)), entry, nbytes)
        for key in self._entries(session_id)[:-self.per_session]:
            self._lru.pop(key)
        return ok

    def take(self, session_id: str, ids, spans: tuple[ImageSpan, ...], new_cache: Callable[[], Any],
             keep: bool = False) -> tuple[Any, int]:
        """``(cache, n)``: a cache standing for the first ``n`` tokens of ``ids`` (``(None, 0)``: none).

        The session's prefix with the longest usable common prefix is chosen (the newest on a
        tie) and taken out, cropped to the shared part. With ``keep`` (the prompt starts a new
        branch) a prefix the prompt leaves part of stays kept for the other branch, and a copy of
        the shared part is handed over instead.
        """
        best, best_n = None, 0
        for key in reversed(self._entries(session_id)):
            entry = self._lru.peek(key)
            n = usable_prefix(entry, ids, spans) if entry is not None else 0
            if n > best_n:
                best, best_n = key, n
        if best is None:
            return None, 0
        entry = self._lru.get(best)  # now the most recently used
        if entry is None:  # evicted meanwhile
            return None, 0
        length = entry.cache.get_seq_length()
        if length == best_n or not keep:
            self._lru.pop(best)
            if length > best_n:
                entry.cache.crop(best_n - length)
            return entry.cache, best_n
        self.copies += 1
        return copy_prefix(entry.cache, best_n, new_cache()), best_n

    def pop(self, session_id: str) -> None:
        """Drop every prefix of the session."""
        for key in self._entries(session_id):
            self._lru.pop(key)

    def clear(self) -> None:
        self._lru.clear()


def entry_for(sequences, cache, spans: tuple[ImageSpan, ...]) -> CachedPrefix | None:
    """The prefix a finished generation leaves: its cache and the ids it covers (None if they disagree)."""
    length = cache.get_seq_length()
    seq = sequences[0].detach().cpu()
    if length > seq.numel():  # pragma: no cover - generate always feeds less than it returns
        return None
    entry = CachedPrefix(seq[:length].clone(), spans, cache)
    entry.nbytes = cache_nbytes(cache)
    return entry
