"""The one backend interface: a conversation in, typed events (prompt, text, usage) out."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llava_app.engine.geometry import PictureGeometry
from llava_app.errors import UserError
from llava_app.storage.images import ModelImageSize


@dataclass
class PromptInfo:
    """What the model saw last: the rendered prompt, its image count and token count."""

    text: str = ""
    n_images: int = 0
    n_tokens: int = 0
    image_labels: list[str] = field(default_factory=list)
    n_image_tokens: int = 0  # of n_tokens, those standing for images
    #: n_tokens is an estimate (a remote server that cannot count for us); the answer's usage replaces it
    estimated: bool = False
    #: who rendered ``text``: "model" (the model's own chat template), "server" (a remote server's template,
    #: as it will render it) or "app" (the messages sent to a server that cannot show its rendering)
    source: str = "model"


# ----- what ``Backend.stream`` yields: typed events, in this order -------------------------------
@dataclass(frozen=True)
class PromptReady:
    """What the model was given (sent once, before the first text)."""

    info: PromptInfo


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the answer (never half a character, never a special token)."""

    text: str


@dataclass(frozen=True)
class Usage:
    """How the answer was made (sent once, last). Timing is measured by the consumer.

    ``prompt_tokens`` is None when the engine cannot tell (a server that sends no usage).
    ``prefilled_tokens`` are the prompt tokens computed again (the rest came from a
    cached prefix); ``images_encoded``/``images_cached`` count vision-tower passes and
    feature-cache hits. Engines that cannot tell leave them None.
    """

    prompt_tokens: int | None
    completion_tokens: int
    finish_reason: str = "stop"  # "stop", "length" or "cancelled"
    prefilled_tokens: int | None = None
    images_encoded: int | None = None
    images_cached: int | None = None


@dataclass(frozen=True)
class Queued:
    """The answer waits for room in the running batch, its place ``place`` (1 is next): sent before
    ``PromptReady`` when the batch's KV would outgrow the memory budget (or, after an out-of-memory,
    the batch was made smaller), and again each time the place changes."""

    place: int


Event = Queued | PromptReady | TextDelta | Usage


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters; temperature 0 means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 0.9
    max_new_tokens: int = 256
    #: seeds this answer's own random generator when sampling (None: a fresh random seed)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """Greedy decoding (no sampling)."""
        return self.temperature <= 0.0


@dataclass
class ChatRequest:
    """One generation: messages (``Conversation.messages()``), parameters and a cancel flag.

    ``cancel`` is set by Stop, by a closed tab, or by the consumer abandoning the
    stream; the engine checks it between decode steps.
    """

    messages: list[dict[str, Any]]
    params: GenerationParams = field(default_factory=GenerationParams)
    session_id: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    #: the prompt starts a new branch of its conversation (an edited question, Regenerate): an engine
    #: that caches the session's prefix keeps the one this prompt parts from, for a switch back
    new_branch: bool = False


class Unsupported(UserError):
    """The engine lacks a capability the caller needs (see ``Backend`` and ``require``)."""


class ContextTooLong(UserError):
    """The engine refused the prompt as longer than its window, before writing anything.

    Raised by an engine whose own count was only an estimate (a remote server); the caller
    drops older turns and asks once more. ``prompt_tokens`` and ``window`` are the server's
    figures when it gave them.
    """

    def __init__(self, message, /, prompt_tokens: int | None = None, window: int | None = None, **params):
        super().__init__(message, **params)
        self.prompt_tokens, self.window = prompt_tokens, window


#: the capabilities an engine declares (class attributes of ``Backend``), and what their absence means
CAPABILITIES = {
    "supports_images": "engine.no_images",
    "counts_tokens": "engine.no_counting",
    "can_switch": "engine.one_model",
}


class Backend(ABC):
    """A chat engine: ``stream`` yields typed events; capabilities are the class attributes below.

    Capabilities are declared here, read as plain attributes, and enforced in one
    place (``require``). Wrappers expose this interface and nothing else.
    """

    #: shown in the page header
    model_name: str = ""
    #: the architecture (transformers' ``config.model_type``, "qwen2_5_vl"), when the engine knows it
    model_type: str = ""
    #: answers come from random weights (tiny test models): the page says so
    is_random: bool = False
    #: the context window in tokens, when known
    context_length: int | None = None
    #: how many generations the engine takes at once; the page queues the rest
    max_concurrency: int = 1
    # ----- capabilities (see ``CAPABILITIES``) -----
    #: the engine accepts images
    supports_images: bool = True
    #: ``count_tokens`` is exact (needed to fit the context window)
    counts_tokens: bool = False
    #: ``count_tokens`` may be an estimate (a remote server): fitting drops old turns on it, but never
    #: refuses a question on it alone (the engine raises ``ContextTooLong`` when the prompt is too long)
    estimates_tokens: bool = False
    #: ``switch`` loads another model in place of the current one
    can_switch: bool = False

    @abstractmethod
    def stream(self, request: ChatRequest) -> Iterator[Event]:
        """Yield ``PromptReady`` once, then ``TextDelta``s, then ``Usage`` once, until the answer ends
        or ``request.cancel`` is set (a cancelled stream ends with a "cancelled" ``Usage`` where the
        engine can tell; one its consumer closes early ends without)."""

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The exact number of prompt tokens ``stream`` would give the model for ``messages``."""
        require(self, "counts_tokens")
        raise NotImplementedError(f"{type(self).__name__} declares counts_tokens but does not count")

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        """Render the prompt for ``messages`` without generating (for the page's panel)."""
        labels = [p["ref"].label for m in messages for p in m["content"] if p["type"] == "image"]
        return PromptInfo(text="", n_images=len(labels), n_tokens=0, image_labels=labels)

    def image_resolution(self) -> ModelImageSize | None:
        """The resolution the model's image processor uses (uploads are stored no larger), if known."""
        return None

    def picture_geometry(self) -> PictureGeometry | None:
        """How the model's image processor frames a picture (the frame its boxes are written in), if known."""
        return None

    def switch(self, name: str, report: Callable[[float, str], None] | None = None) -> bool:
        """Load model ``name`` in place of the current one (engines with ``can_switch``)."""
        require(self, "can_switch")
        raise NotImplementedError(f"{type(self).__name__} declares can_switch but does not switch")

    def forget(self, session_id: str) -> None:  # noqa: B027 - optional: engines without a cache keep nothing
        """Drop whatever the engine cached for a session (closed tab, new chat)."""

    def close(self) -> None:  # noqa: B027 - optional: an engine holding nothing has nothing to release
        """Release the model and its memory."""


def require(backend: Backend, capability: str) -> None:
    """The one capability check: raise ``Unsupported`` (a ``UserError``) when ``backend`` lacks it."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; declared: {', '.join(CAPABILITIES)}")
    if not getattr(backend, capability):
        raise Unsupported(CAPABILITIES[capability])


def image_refs(messages: list[dict[str, Any]]) -> list[Any]:
    """The ``ImageRef`` of every image part, in prompt order."""
    return [part["ref"] for m in messages for part in m["content"] if part["type"] == "image"]
