"""Chat engines behind one interface; ``make_backend`` picks one from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend, ChatRequest, GenerationParams

if TYPE_CHECKING:
    from ..config import Config
    from ..images import ImageStore

__all__ = ["Backend", "ChatRequest", "GenerationParams", "make_backend"]


def make_backend(config: "Config", image_store: "ImageStore") -> Backend:
    """The engine the config asks for (heavy imports happen only here, lazily)."""
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend(
            config.model, image_store, device=config.device, dtype=config.dtype,
            load_in_4bit=config.load_in_4bit, load_in_8bit=config.load_in_8bit,
            stream_delay=config.stream_delay, context_length=config.context_length or None,
        )
    if config.backend == "openai":
        from .remote import OpenAIBackend

        return OpenAIBackend(config.model, config.base_url, api_key=config.api_key, timeout=config.request_timeout,
                             context_length=config.context_length or None)
    raise SystemExit(f"error: unknown backend {config.backend!r}")
