"""Fit a long conversation into the model's context window, and say what no longer fits.

Before each answer the engine counts the prompt's tokens itself (the processor's own
output, image tokens included). The budget is the window less the answer's max new
tokens. When the prompt does not fit, the oldest turns are dropped *in steps*: enough
of them to come down to a low-water mark well under the budget, so the next several
turns only append to the prompt and a cached prefix (KV reuse) stays valid between
drops. Every image still in the gallery stays in the prompt: those of dropped turns
move, with their labels, to the first turn that is kept. With ``summarize`` the dropped
turns are replaced by a short summary that the model writes of them. When the images
alone cannot fit, the question is refused before generating, with the numbers and what
to do.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llava_app.chat.branches import is_new_branch
from llava_app.chat.conversation import SUMMARY_LEAD, Conversation, ImageRef, PromptInfo
from llava_app.engine.base import Backend, ChatRequest, ContextTooLong, Event, GenerationParams, TextDelta
from llava_app.errors import UserError
from llava_app.messages import Message

log = logging.getLogger(__name__)

#: after a drop the prompt uses at most this share of the room between the smallest
#: possible prompt and the budget; the rest is headroom for the next turns
LOW_WATER = 0.5
#: the longest summary of dropped turns, in tokens
SUMMARY_TOKENS = 64
#: pictures whose token cost is remembered (a few bytes each)
_IMAGE_COSTS_KEPT = 4096
SUMMARY_INSTRUCTION = (
    "Summarise the conversation above in at most three short sentences, for your own memory: keep what the "
    "user wanted and the facts about the images, naming them by their labels (Image 1, Image 2, ...)."
)


@dataclass
class ContextFitter:
    """Keeps a conversation's prompt inside the backend's context window (see the module docstring).

    Args:
        backend: the engine; fitting is on when it counts tokens and knows its window.
        summarize: replace dropped turns by a model-written summary (``--summarize-dropped``).
        low_water: see ``LOW_WATER``.
        summary_tokens: the summary's max new tokens.
        answer_tokens: the answer length assumed by upload-time checks (the default max new tokens).
    """

    backend: Backend
    summarize: bool = False
    low_water: float = LOW_WATER
    summary_tokens: int = SUMMARY_TOKENS
    answer_tokens: int = 256
    _image_costs: OrderedDict[tuple[str, str], int] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def window(self) -> int | None:
        """The model's context window in tokens, when known."""
        return self.backend.context_length or None

    @property
    def active(self) -> bool:
        """Fitting needs counts (exact, or a remote server's conservative estimate) and a known window."""
        return bool(self.backend.counts_tokens and self.window)

    def count(self, conv: Conversation, system_prompt: str, first_visible: int | None = None,
              summary: str | None = None) -> int:
        """The engine's own count of the prompt's tokens, as it would be with ``first_visible``/``summary``."""
        return self.backend.count_tokens(_prompt_messages(conv, system_prompt, first_visible, summary))

    # ----- fitting -------------------------------------------------------------------------
    def start(self, conv: Conversation, system_prompt: str, params: GenerationParams,
              cancel: threading.Event) -> tuple[Iterator[Event], list[Event]]:
        """Fit the pending turn's prompt and start the engine on it: its stream and the event it began with.

        An engine whose count was only an estimate (a remote server) may still find the prompt too
        long before it writes anything (``ContextTooLong``): older turns are dropped and it is asked
        once more; the page's note and meter then say which turns the model no longer sees.
        """
        self.fit(conv, system_prompt, params, cancel)
        for retry in (False, True):
            request = ChatRequest(conv.messages(system_prompt), params, session_id=conv.id, cancel=cancel,
                                  new_branch=is_new_branch(conv))
            events = self.backend.stream(request)
            try:
                return events, [e for e in (next(events, None),) if e is not None]
            except ContextTooLong as exc:
                if retry or not self.active or not self.fit(conv, system_prompt, params, cancel, refused=True):
                    raise
                log.info("the engine found conversation %s too long (%s tokens); asked again with turns %d.. only",
                         conv.id[:8], exc.prompt_tokens or "?", conv.first_visible)
        raise AssertionError("unreachable")  # pragma: no cover

    def fit(self, conv: Conversation, system_prompt: str, params: GenerationParams,
            cancel: threading.Event | None = None, refused: bool = False) -> int | None:
        """Make the pending turn's prompt fit, dropping (and summarising) old turns; refuse what cannot fit.

        Returns the prompt's token count, as the model will get it (None when fitting is off, or
        ``refused`` and no turn is left to drop). ``refused``: the engine found the prompt too long
        although it was counted to fit (an estimate): older turns are dropped all the same.
        Raises ``UserError`` (before anything is generated) when even the newest turn
        with all the images does not fit, counted exactly.
        """
        if not self.active or not conv.turns:
            return None
        window = int(self.window)
        with conv.lock:
            conv.context_window = window
        budget = window - params.max_new_tokens
        if budget <= 0:
            raise UserError("context.no_room", tokens=params.max_new_tokens, window=window)
        tokens = self.count(conv, system_prompt)
        if tokens <= budget and not refused:
            return tokens
        last = len(conv.turns) - 1
        if refused and conv.first_visible >= last:
            return None  # nothing older is left to drop
        minimal = self.count(conv, system_prompt, last, "")
        if minimal > budget and self.backend.estimates_tokens:
            budget = minimal  # an estimate never refuses: keep the newest turn alone and let the engine judge
        if minimal > budget:
            # Said once, with the numbers: the full count tells the images' part.
            info = self.backend.prompt_info(_prompt_messages(conv, system_prompt, last, ""))
            raise UserError(too_big_message(info, window, params.max_new_tokens))
        target = minimal + int(self.low_water * (budget - minimal))
        old_start, old_summary = conv.first_visible, conv.context_summary
        summary = ""
        if old_start == last:
            start = last  # only the old summary can go
        elif self.summarize:
            # Leave room for the summary that will stand in for the dropped turns.
            reserve = self.summary_tokens + 16
            start = self._smallest_start(conv, system_prompt, old_start + 1, last, target - reserve, "")
            summary = self.summarize_turns(conv, old_summary, old_start, start, cancel)
            if cancel is not None and cancel.is_set():
                return tokens  # stopped while summarising: the conversation stays as it was
            if summary and self.count(conv, system_prompt, last, summary) > budget:
                summary = ""  # not even the summary fits beside the images
            if summary:
                start = self._smallest_start(conv, system_prompt, start, last, budget, summary)
        else:
            start = self._smallest_start(conv, system_prompt, old_start + 1, last, target, "")
        with conv.lock:
            conv.first_visible, conv.context_summary = start, summary
        fitted = self.count(conv, system_prompt)
        log.info("context: dropped turns %d..%d of conversation %s (%d -> %d tokens, budget %d%s)", old_start,
                 start - 1, conv.id[:8], tokens, fitted, budget, ", summarised" if summary else "")
        return fitted

    def _smallest_start(self, conv: Conversation, system_prompt: str, lo: int, hi: int, limit: int,
                        summary: str) -> int:
        """The fewest turns to drop (first kept turn in ``lo..hi``) for the prompt to take ``limit`` tokens or less.

        Dropping turns never adds tokens, so a binary search needs a handful of counts.
        """
        lo = min(lo, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count(conv, system_prompt, mid, summary) <= limit:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def summarize_turns(self, conv: Conversation, previous: str, lo: int, hi: int,
                        cancel: threading.Event | None = None) -> str:
        """A summary, written by the model, of turns ``lo..hi-1`` (and of the previous summary)."""
        window = int(self.window or 0)
        lines = []
        for i in range(lo, hi):
            turn = conv.turns[i]
            shown = "".join(f"[{im.label}] " for im in conv.images_for_turn(i))
            lines.append(f"User: {shown}{turn.user}\nAssistant: {turn.assistant or ''}")
        while True:
            transcript = (f"{SUMMARY_LEAD} {previous}\n" if previous else "") + "\n".join(lines)
            msgs = [{"role": "user", "content": [{"type": "text", "text": f"{transcript}\n\n{SUMMARY_INSTRUCTION}"}]}]
            fits = self.backend.count_tokens(msgs) + self.summary_tokens <= window
            if fits or not lines:
                break
            lines.pop(0)  # the oldest turns are left out of what is summarised, never the newest
        if not fits:
            return previous
        request = ChatRequest(msgs, GenerationParams(temperature=0.0, max_new_tokens=self.summary_tokens),
                              session_id=conv.id, cancel=cancel or threading.Event())
        return "".join(e.text for e in self.backend.stream(request) if isinstance(e, TextDelta)).strip()

    # ----- images ----------------------------------------------------------------------------
    def image_tokens(self, image: ImageRef) -> int | None:
        """What one image costs in the prompt, counted by the engine (cached per picture)."""
        if not self.backend.counts_tokens:
            return None
        key = (self.backend.model_name, image.sha256)  # the model may be switched while the app runs
        with self._lock:
            cost = self._image_costs.get(key)
        if cost is None:
            info = self.backend.prompt_info([{"role": "user", "content": [{"type": "image", "ref": image}]}])
            cost = info.n_image_tokens
            if self.backend.estimates_tokens:
                return cost  # not kept: the engine learns what a picture costs as it goes
            with self._lock:
                self._image_costs[key] = cost
                if len(self._image_costs) > _IMAGE_COSTS_KEPT:
                    self._image_costs.popitem(last=False)
        return cost

    def images_warning(self, conv: Conversation) -> Message | None:
        """A message when the conversation's images alone leave no room (checked at upload)."""
        if not self.active or not conv.images or self.backend.estimates_tokens:
            return None  # an estimate warns of nothing: the engine judges
        window = int(self.window)
        if self.answer_tokens >= window:
            return None  # the answer length is the problem; asking says so
        costs = [self.image_tokens(im) or 0 for im in conv.images]
        if sum(costs) <= window - self.answer_tokens:
            return None
        info = PromptInfo(n_images=len(costs), n_tokens=sum(costs), n_image_tokens=sum(costs))
        return too_big_message(info, window, self.answer_tokens)

    def known_image_tokens(self, conv: Conversation) -> int | None:
        """The images' tokens from the cache only (cheap enough for every streamed update)."""
        with self._lock:
            costs = [self._image_costs.get((self.backend.model_name, im.sha256)) for im in conv.images]
        return None if None in costs else sum(costs)  # type: ignore[arg-type]


def _prompt_messages(conv: Conversation, system_prompt: str, first_visible: int | None,
                     summary: str | None) -> list[dict[str, Any]]:
    """The messages of the prompt for the pending (or last) turn: a prompt ends at its question."""
    msgs = conv.messages(system_prompt, first_visible, summary)
    if msgs and msgs[-1]["role"] == "assistant":  # regenerate/preview: the prompt ends at the question
        msgs = msgs[:-1]
    return msgs


def too_big_message(info: PromptInfo, window: int, answer_tokens: int) -> Message:
    """Why the smallest possible prompt does not fit, with the numbers and what to do."""
    budget = window - answer_tokens
    text_tokens = info.n_tokens - info.n_image_tokens
    if info.n_image_tokens and text_tokens < budget:
        images = Message("context.one_image") if info.n_images == 1 else \
            Message("context.images", count=info.n_images)
        text = Message("context.and_text", tokens=text_tokens) if text_tokens else ""
        return Message("context.images_too_big", images=images, image_tokens=info.n_image_tokens, window=window,
                       answer=answer_tokens, text=text)
    return Message("context.text_too_big", text=text_tokens, answer=answer_tokens, window=window, room=max(budget, 0))
