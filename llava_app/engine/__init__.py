"""Chat engines behind one interface; ``make_backend`` picks one from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llava_app.engine.base import Backend, ChatRequest, GenerationParams
from llava_app.errors import ConfigError

if TYPE_CHECKING:
    from llava_app.config import Config
    from llava_app.storage.images import ImageStore

__all__ = ["Backend", "ChatRequest", "GenerationParams", "make_app_backend", "make_backend"]


def make_backend(config: Config, image_store: ImageStore) -> Backend:
    """The engine the config asks for (heavy imports happen only here, lazily)."""
    if config.backend == "local":
        from llava_app.engine.hosting.spaces import load_spaces

        spaces = load_spaces()  # before torch: ZeroGPU patches it on import
        kwargs = dict(
            model=config.model, device=config.device, dtype=config.dtype,
            load_in_4bit=config.load_in_4bit, load_in_8bit=config.load_in_8bit,
            stream_delay=config.stream_delay, context_length=config.context_length or None,
            kv_cache_bytes=int(config.kv_cache_mb * 2**20), feature_cache_bytes=int(config.feature_cache_mb * 2**20),
            # ZeroGPU runs each answer in a forked worker, where the scheduler's thread does not exist
            max_batch=config.max_batch, batch=spaces is None, image_pixels=config.image_pixels,
        )
        if spaces is None and config.engine_process:  # the model apart from the web server (engine/local/worker.py)
            from llava_app.engine.local.worker import EngineProcess

            return EngineProcess(kwargs, image_store.root)
        from llava_app.engine.local.backend import LocalBackend

        engine = LocalBackend(image_store=image_store, **kwargs)
        if spaces is None:
            return engine
        from llava_app.engine.hosting.zerogpu import on_gpu

        return on_gpu(engine, spaces)
    if config.backend == "openai":
        from llava_app.engine.remote import OpenAIBackend

        return OpenAIBackend(config.model, config.base_url, api_key=config.api_key, timeout=config.request_timeout,
                             context_length=config.context_length or None)
    raise ConfigError("config.backend", backend=config.backend)


def make_app_backend(config: Config, image_store: ImageStore) -> Backend:
    """The app's backend: ``make_backend``, held by a ``SwitchableBackend`` when the page may switch models.

    Switching needs the local engine and more than one allowed model; ZeroGPU moves
    only the weights loaded at start-up to its GPUs, so it keeps the start-up model.
    """
    import dataclasses

    from llava_app.engine.catalog import allowed_models
    from llava_app.engine.hosting.spaces import on_zerogpu

    engine = make_backend(config, image_store)
    if config.backend != "local" or len(allowed_models(config)) < 2 or on_zerogpu():
        return engine
    from llava_app.engine.switchable import SwitchableBackend

    return SwitchableBackend(engine, lambda name: make_backend(dataclasses.replace(config, model=name), image_store))
