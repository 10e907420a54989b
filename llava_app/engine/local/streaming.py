"""What the local engine streams through: transformers' streamer, decoding under the tokenizer lock,
letting whole characters out early, and the errors a consumer gets for a failure in the model."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator

from llava_app.errors import EngineError, UserError
from llava_app.faults import out_of_memory_error


class LockedDecoder:
    """What ``TextIteratorStreamer`` uses of a tokenizer (``decode``), under the engine's tokenizer lock."""

    def __init__(self, tokenizer, lock):
        self._tokenizer, self._lock = tokenizer, lock

    def decode(self, *args, **kwargs) -> str:
        with self._lock:
            return self._tokenizer.decode(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def eager_streamer():
    """``TextIteratorStreamer`` letting text out as soon as it is whole characters, decoding only a few tokens.

    transformers' streamer holds a word back until the next space (the first text waits for the second
    token) and decodes the whole line again at every token (quadratic in a long line). This one, as the
    serving engines do, decodes a short window: the tokens since the previous piece's start, less what
    that window decoded to before, is the new text; it is held back while it ends with an incomplete
    character (U+FFFD: a multi-byte character split across tokens).
    """
    from transformers import TextIteratorStreamer

    class EagerStreamer(TextIteratorStreamer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.prefix = self.read = 0  # token_cache[prefix:read] decoded to the text shown last

        def _new_text(self, final: bool) -> str:
            decode = lambda ids: self.tokenizer.decode(ids, **self.decode_kwargs)  # noqa: E731
            before = decode(self.token_cache[self.prefix:self.read]) if self.read > self.prefix else ""
            text = decode(self.token_cache[self.prefix:])
            if not final and (len(text) <= len(before) or not text.startswith(before) or text.endswith("\ufffd")):
                return ""  # nothing whole yet (or a later token rewrote the window: wait for more)
            self.prefix, self.read = self.read, len(self.token_cache)
            return text[len(before):]

        def put(self, value):
            if len(value.shape) > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            self.on_finalized_text(self._new_text(final=False))

        def end(self):
            printable = self._new_text(final=True) if len(self.token_cache) > self.read else ""
            self.token_cache, self.prefix, self.read, self.next_tokens_are_prompt = [], 0, 0, True
            self.on_finalized_text(printable, stream_end=True)

    return EagerStreamer


def texts(streamer, thread: threading.Thread) -> Iterator[str]:
    """The streamer's text until it ends, or until the generate thread is gone without ending it.

    The streamer's queue is read with a timeout, so a generate thread that died before it
    could end the stream (its own failure in the decoding) never leaves the consumer waiting.
    """
    while True:
        try:
            yield next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if not thread.is_alive():
                return


def user_facing(exc: BaseException) -> BaseException:
    """What the consumer gets for a failure inside ``generate``: the project's own errors."""
    oom = out_of_memory_error(exc)
    if oom is not None:
        return oom
    if isinstance(exc, (EngineError, UserError)) or not isinstance(exc, Exception):
        return exc
    error = EngineError(f"The model failed while writing the answer ({type(exc).__name__}: {exc}).")
    error.__cause__ = exc
    return error
