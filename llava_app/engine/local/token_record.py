"""The token ids a session's model last read and wrote, kept as the record of its answers.

A conversation stores answers as text; the next turn's prompt re-tokenises that text. With byte-level
BPE or SentencePiece the model's own ids for an answer are often not the canonical tokenisation of
its text (a word written in two pieces, a character split into bytes), so the new prompt's ids part
from the cached ones inside the previous answer, and everything after that point is read again.
Serving engines keep the generated ids instead; so does this: where the new prompt's text is the same
as the recorded ids' text, the recorded ids are used.

``splice`` walks the new prompt's ids and the record together; where they part, it looks for the
nearest point at which both decode to the same text again (never across a special token: image
placeholders and turn markers stay as the template puts them), and takes the record's ids up to it.
The prompt text is unchanged; only its tokenisation follows what the model saw. A record is kept for
each session whether or not its KV cache is, so prompts are the same with and without KV reuse.
A session keeps one record per branch of its conversation (a turn that extends a record replaces
it; an edit or Regenerate adds one), and a prompt is spliced with the record it shares most with.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import OrderedDict

MAX_REALIGN = 512  # tokens looked at on either side to find where two tokenisations meet again
# Context fitting counts the plain tokenisation (``prompt_info`` knows no session); a prompt that the
# record makes longer than that by more is taken as it tokenises, so the count is never off by more.
MAX_LONGER = 64
PER_SESSION = 8  # records kept per session (one per branch it generated); the oldest go first


class TokenRecords:
    """Per session and branch, the ids of the latest prompt plus answer (bounded, thread-safe)."""

    def __init__(self, tokenizer, max_sessions: int = 256, tokenizer_lock=None):
        self.tokenizer = tokenizer
        self._tokenizer_lock = tokenizer_lock or contextlib.nullcontext()  # held around tokenizer calls
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if getattr(t, "special", False)}
        self.max_sessions = max_sessions
        self.enabled = True  # off: prompts are the plain tokenisation of their text (for comparisons)
        self._records: OrderedDict[str, list[list[int]]] = OrderedDict()
        self._token_bytes: dict[int, bytes] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = "ByteLevel" in repr(decoder)
        # Token pieces map to bytes only for byte-level BPE and SentencePiece (Metaspace "▁");
        # any other tokenizer is taken as it tokenises (no realignment).
        self.realigns = self._byte_level or "Metaspace" in repr(
            getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None))
        self._lock = threading.Lock()

    def remember(self, session_id: str, sequences) -> None:
        """Record what the model read and wrote in its latest turn (``generate``'s output, batch of one;
        None when the turn failed or was forgotten meanwhile: nothing is recorded)."""
        if not session_id or sequences is None:
            return
        ids = [int(i) for i in sequences[0].tolist()]
        with self._lock:
            kept = [r for r in self._records.get(session_id, []) if r != ids[:len(r)]]  # extended: replaced
            self._records[session_id] = (kept + [ids])[-PER_SESSION:]
            self._records.move_to_end(session_id)
            while len(self._records) > self.max_sessions:
                self._records.popitem(last=False)

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._records.pop(session_id, None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def splice(self, session_id: str, ids: list[int]) -> list[int]:
        """``ids`` (the plain tokenisation of a prompt) with the session's recorded ids wherever the text matches."""
        with self._lock:
            records = list(self._records.get(session_id, []))
        if not (self.enabled and self.realigns and records):
            return ids
        best, score = ids, -1
        for record in reversed(records):  # the newest first: it wins a tie
            spliced = self._splice(record, ids)
            common = _common(record, 0, spliced, 0)
            if common > score:
                best, score = spliced, common
        return best

    def _splice(self, record: list[int], ids: list[int]) -> list[int]:
        """``ids`` with ``record``'s ids wherever the two decode to the same text, from the start."""
        out: list[int] = []
        i = j = 0
        while True:
            n = _common(record, i, ids, j)
            out += ids[j:j + n]
            i, j = i + n, j + n
            if j >= len(ids) or i >= len(record):
                break
            meet = self._realign(record, i, ids, j)
            if meet is None:
                break
            a, b = meet
            out += record[i:a]
            i, j = a, b
        return out + ids[j:]

    def keep_recorded_ids(self, session_id: str, ids, spans, image_token_id: int, make_span):
        """``ids`` (1-D tensor) with the session's recorded ids where the text is the same; image spans moved along."""
        import torch

        if not session_id:
            return ids, spans
        plain = ids.tolist()
        spliced = self.splice(session_id, plain)
        if spliced == plain or len(spliced) > len(plain) + MAX_LONGER:
            return ids, spans
        moved = respan(spliced, spans, image_token_id, make_span)
        if moved is None:  # pragma: no cover - a splice never crosses an image placeholder
            return ids, spans
        return torch.as_tensor(spliced, dtype=torch.long), moved

    def _realign(self, record: list[int], i: int, ids: list[int], j: int) -> tuple[int, int] | None:
        """The nearest ``(a, b)`` past ``(i, j)`` where ``record[i:a]`` and ``ids[j:b]`` are the same bytes."""
        left = right = b""
        a, b = i, j
        while a - i <= MAX_REALIGN and b - j <= MAX_REALIGN:
            if len(left) <= len(right):
                if a >= len(record) or record[a] in self.special:
                    return None
                left += self._bytes(record[a])
                a += 1
            else:
                if b >= len(ids) or ids[b] in self.special:
                    return None
                right += self._bytes(ids[b])
                b += 1
            if left == right:
                return a, b
            if not (left.startswith(right) or right.startswith(left)):
                return None  # the texts differ: an edit, not another tokenisation
        return None

    def _bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (byte-level BPE or SentencePiece with byte fallback)."""
        cached = self._token_bytes.get(token_id)
        if cached is None:
            with self._tokenizer_lock:
                piece = self.tokenizer.convert_ids_to_tokens(token_id)
            cached = self._token_bytes[token_id] = _piece_bytes(piece, self._byte_level)
        return cached


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the byte each printable stand-in character means."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=False)}


def _piece_bytes(piece: str, byte_level: bool) -> bytes:
    if byte_level:
        table = byte_decoder()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.encode("utf-8")
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def _common(x: list[int], i: int, y: list[int], j: int) -> int:
    """How many tokens ``x[i:]`` and ``y[j:]`` share from their start."""
    n = 0
    limit = min(len(x) - i, len(y) - j)
    while n < limit and x[i + n] == y[j + n]:
        n += 1
    return n


def respan(ids, spans, image_token_id: int, make_span):
    """The image spans of ``spans`` (same order and lengths) relocated in ``ids``; None if they do not fit."""
    is_image = [int(t) == image_token_id for t in ids]
    out, pos = [], 0
    for span in spans:
        n = span.stop - span.start
        while pos < len(is_image) and not is_image[pos]:
            pos += 1
        if pos + n > len(is_image) or not all(is_image[pos:pos + n]):
            return None
        out.append(make_span(pos, pos + n, span.sha256))
        pos += n
    if sum(is_image) != sum(s.stop - s.start for s in spans):
        return None
    return tuple(out)
