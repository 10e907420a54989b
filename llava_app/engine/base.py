"""The one backend interface: a conversation in, text chunks out."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

from llava_app.storage.images import ModelImageSize


@dataclass
class PromptInfo:
    """What the model saw last: the rendered prompt, its image count and token count."""

    text: str = ""
    n_images: int = 0
    n_tokens: int = 0
    image_labels: list[str] = field(default_factory=list)
    n_image_tokens: int = 0  # of n_tokens, those standing for images


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

    ``prefilled_tokens`` are the prompt tokens computed again (the rest came from a
    cached prefix); ``images_encoded``/``images_cached`` count vision-tower passes and
    feature-cache hits. Engines that cannot tell leave them None.
    """

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop", "length" or "cancelled"
    prefilled_tokens: int | None = None
    images_encoded: int | None = None
    images_cached: int | None = None


Event = PromptReady | TextDelta | Usage


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters; temperature 0 means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 0.9
    max_new_tokens: int = 256

    @property
    def greedy(self) -> bool:
        """Greedy decoding (no sampling)."""
        return self.temperature <= 0.0


@dataclass
class ChatRequest:
    """One generation: messages (``Conversation.messages()``), parameters and a cancel flag.

    ``cancel`` is set by Stop, by a closed tab, or by the consumer abandoning the
    stream; the engine checks it between decode steps. The engine fills ``info`` with
    what the model was given before the first chunk.
    """

    messages: list[dict[str, Any]]
    params: GenerationParams = field(default_factory=GenerationParams)
    session_id: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    info: PromptInfo | None = None


class Backend(ABC):
    """A chat engine. Implementations stream text chunks and state their capabilities."""

    #: shown in the page header
    model_name: str = ""
    #: answers come from random weights (tiny test models): the page says so
    is_random: bool = False
    #: the engine accepts images
    supports_images: bool = True
    #: the context window in tokens, when known
    context_length: int | None = None
    #: how many generations the engine takes at once; the page queues the rest
    max_concurrency: int = 1
    #: ``prompt_info`` counts the prompt's tokens exactly (needed to fit the context window)
    counts_tokens: bool = False

    @abstractmethod
    def stream(self, request: ChatRequest) -> Iterator[str]:
        """Yield the answer as text chunks (deltas) until it ends or ``request.cancel`` is set."""

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        """Render the prompt for ``messages`` without generating (for the page's panel)."""
        labels = [p["ref"].label for m in messages for p in m["content"] if p["type"] == "image"]
        return PromptInfo(text="", n_images=len(labels), n_tokens=0, image_labels=labels)

    def image_resolution(self) -> "ModelImageSize | None":
        """The resolution the model's image processor uses (uploads are stored no larger), if known."""
        return None

    def forget(self, session_id: str) -> None:
        """Drop whatever the engine cached for a session (closed tab, new chat)."""

    def close(self) -> None:
        """Release the model and its memory."""


def image_refs(messages: list[dict[str, Any]]) -> list[Any]:
    """The ``ImageRef`` of every image part, in prompt order."""
    return [part["ref"] for m in messages for part in m["content"] if part["type"] == "image"]
