"""An answer's timing and usage, as its consumer (the service) sees it."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from llava_app.chat.conversation import AnswerStats, Conversation
from llava_app.engine.base import PromptReady, Queued, TextDelta, Usage


class AnswerClock:
    """Times one answer as its consumer sees it: time to the first text, then the decode rate."""

    def __init__(self):
        self.started = time.perf_counter()
        self.waited_s = 0.0  # in the service's line, before ``start``
        self.queued_until: float | None = None  # the engine's own line (no room in its batch yet) ended here
        self.waiting = False
        self.first: float | None = None
        self.latest: float | None = None
        self.usage: Usage | None = None

    def start(self) -> AnswerClock:
        """Out of the service's line: the time spent in it so far is time in line, and the model's clock starts."""
        now = time.perf_counter()
        self.waited_s, self.started = now - self.started, now
        return self

    def see(self, event: Any) -> None:
        """Time one of the engine's events: ``Queued`` (no room for the answer yet: still in line), ``PromptReady``
        (the engine took it), text (the first token, the decode rate), ``Usage``."""
        if isinstance(event, Queued):
            self.waiting = True
        elif isinstance(event, PromptReady):
            self.served()
        elif isinstance(event, TextDelta):
            self.text()
        elif isinstance(event, Usage):
            self.usage = event

    def served(self) -> None:
        """The engine took the answer (its prompt is ready, or text came): its line ends here."""
        if self.waiting:
            self.queued_until, self.waiting = time.perf_counter(), False

    def text(self) -> None:
        self.served()
        self.latest = time.perf_counter()
        if self.first is None:
            self.first = self.latest

    def stats(self) -> AnswerStats | None:
        """The answer's stats; None when the engine sent no ``Usage`` (a stream that failed or was cut)."""
        u = self.usage
        if u is None:
            return None
        served = max(self.started, self.queued_until or self.started)
        ttft = None if self.first is None else self.first - served
        queued = self.waited_s + (served - self.started)
        rate = None
        if self.first is not None and self.latest is not None and self.latest > self.first and u.completion_tokens > 1:
            rate = (u.completion_tokens - 1) / (self.latest - self.first)
        return AnswerStats(ttft_s=ttft, tokens_per_s=rate, prompt_tokens=u.prompt_tokens,
                           completion_tokens=u.completion_tokens, prefilled_tokens=u.prefilled_tokens,
                           images_encoded=u.images_encoded, images_cached=u.images_cached,
                           finish_reason=u.finish_reason, queued_s=queued)


def count_prompt(conv: Conversation, usage: Usage) -> None:
    """An engine that learns the prompt's exact size only at the end (a remote server) fills it in now."""
    info = conv.last_prompt
    if info is not None and (info.estimated or not info.n_tokens) and usage.prompt_tokens:
        images = info.n_image_tokens
        if info.estimated and info.n_images:  # the pictures' part was the guess: the server's count less the text
            images = max(0, usage.prompt_tokens - (info.n_tokens - info.n_image_tokens))
        conv.set_prompt(dataclasses.replace(info, n_tokens=usage.prompt_tokens, n_image_tokens=images,
                                            estimated=False))
