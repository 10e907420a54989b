"""A recording fake engine for service and handler tests: scripted answers, every request kept (no torch).

Modelled on simonw/llm's ``MockModel``: ``enqueue`` the chunks of the next answers; each
request is recorded with the messages the engine was given, so a test can check what the
model would have seen. It speaks the engine contract (``PromptReady``, ``TextDelta``s,
``Usage``), counts tokens as words, and honours the cancel flag between chunks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from llava_app.engine.base import Backend, ChatRequest, Event, PromptInfo, PromptReady, TextDelta, Usage, image_refs


def render(messages: list[dict[str, Any]]) -> str:
    """A plain prompt text: ``[role] text`` lines, images as ``<image>``."""
    lines = []
    for m in messages:
        parts = ["<image>" if p["type"] == "image" else p["text"] for p in m["content"]]
        lines.append(f"[{m['role']}] " + " ".join(parts))
    return "\n".join(lines)


class RecordingBackend(Backend):
    """Answers with enqueued chunks (default: ``["ok"]``) and records every request."""

    model_name = "recording-fake"
    is_random = True
    counts_tokens = True
    context_length = 4096

    def __init__(self, image_tokens: int = 10):
        self.image_tokens = image_tokens
        self.requests: list[ChatRequest] = []
        self.forgotten: list[str] = []
        self._answers: deque[list[str]] = deque()
        #: set by a test to hold the stream after its first chunk until released
        self.hold = threading.Event()
        self.hold.set()
        #: seconds each chunk takes, not cut short by a cancel (a slow decode step on a loaded machine)
        self.step_s = 0.0
        #: set by a test: raised by the next streams once the prompt is ready (an engine fault)
        self.fail_with: BaseException | None = None

    def enqueue(self, *chunks: str) -> RecordingBackend:
        """The next answer, chunk by chunk."""
        self._answers.append(list(chunks))
        return self

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        text = render(messages)
        return len(text.replace("<image>", " ").split()) + self.image_tokens * len(image_refs(messages))

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        refs = image_refs(messages)
        return PromptInfo(text=render(messages), n_images=len(refs), n_tokens=self.count_tokens(messages),
                          image_labels=[r.label for r in refs], n_image_tokens=self.image_tokens * len(refs))

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        self.requests.append(request)
        chunks = self._answers.popleft() if self._answers else ["ok"]
        info = self.prompt_info(request.messages)
        yield PromptReady(info)
        if self.fail_with is not None:
            raise self.fail_with
        sent = 0
        for i, chunk in enumerate(chunks):
            if request.cancel.is_set():
                break
            if self.step_s:
                time.sleep(self.step_s)
            yield TextDelta(chunk)
            sent += 1
            if i == 0:
                self.hold.wait(timeout=30)
        finish = "cancelled" if request.cancel.is_set() else "stop"
        yield Usage(prompt_tokens=info.n_tokens, completion_tokens=sent, finish_reason=finish, prefilled_tokens=0,
                    images_encoded=0, images_cached=info.n_images)

    def forget(self, session_id: str) -> None:
        self.forgotten.append(session_id)

    @property
    def last_prompt(self) -> str:
        """The prompt text of the newest request."""
        return render(self.requests[-1].messages)
