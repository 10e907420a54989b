"""The local engine's generation under ``@spaces.GPU`` (Hugging Face ZeroGPU).

On ZeroGPU the model is loaded at start-up and the GPU is lent per call: a function
decorated with ``spaces.GPU`` runs in a forked worker that holds the GPU, its
arguments and the items it yields are pickled across the process boundary, and
closing the generator on our side stops the worker's generator at its next item.
So the engine is found by a key in a module-level registry (the worker is a fork of
this process and has the same registry), the arguments are plain data (messages,
parameters), and the cancel flag is honoured here, between chunks, by closing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from llava_app.engine.base import Backend, ChatRequest, Event, GenerationParams, PromptInfo, image_refs
from llava_app.engine.hosting.spaces import gpu_seconds

# Engines by key, reachable from ZeroGPU's forked worker (arguments must be picklable,
# a model is not). Holds engines, never conversations.
_ENGINES: dict[int, Backend] = {}
_KEYS = itertools.count(1)


def generate_on_gpu(key: int, messages: list[dict[str, Any]], params: GenerationParams,
                    session_id: str) -> Iterator[Event]:
    """Stream one answer: the engine's events, which pickle across the worker's process boundary."""
    yield from _ENGINES[key].stream(ChatRequest(messages, params, session_id=session_id))


def gpu_duration(key: int, messages: list[dict[str, Any]], params: GenerationParams, session_id: str) -> int:
    """``spaces.GPU``'s callable duration: called with the same arguments as the GPU function."""
    return gpu_seconds(params.max_new_tokens, len(image_refs(messages)))


class ZeroGPUBackend(Backend):
    """Wraps an engine so each generation runs through ``gpu(duration=gpu_duration)``.

    It exposes the ``Backend`` interface only; ``engine`` is the wrapped engine.
    """

    def __init__(self, engine: Backend, gpu: Callable[..., Any]):
        self._engine = engine
        self.key = next(_KEYS)
        _ENGINES[self.key] = engine
        self._generate = gpu(duration=gpu_duration)(generate_on_gpu)
        self.model_name = engine.model_name
        self.is_random = engine.is_random
        self.supports_images = engine.supports_images
        self.context_length = engine.context_length
        self.counts_tokens = engine.counts_tokens  # counting needs the processor only, no GPU

    @property
    def engine(self) -> Backend:
        """The wrapped engine."""
        return self._engine

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        if request.cancel.is_set():
            return
        items = self._generate(self.key, request.messages, request.params, request.session_id)
        try:
            for event in items:
                yield event
                if request.cancel.is_set():
                    break  # the worker's own Usage is not awaited: closing stops it
        finally:
            items.close()  # ZeroGPU then stops the worker's generator, and so the model

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._engine.count_tokens(messages)  # the processor only: no GPU needed

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        return self._engine.prompt_info(messages)

    def image_resolution(self):
        return self._engine.image_resolution()

    def forget(self, session_id: str) -> None:
        self._engine.forget(session_id)

    def close(self) -> None:
        _ENGINES.pop(self.key, None)
        self._engine.close()


def on_gpu(engine: Backend, spaces: Any) -> Backend:
    """``engine`` wrapped for ZeroGPU, or as it is where ``spaces.GPU`` changes nothing.

    Off ZeroGPU (a local run, a Space on dedicated hardware) ``spaces.GPU`` returns the
    function itself; the engine is then used directly, with its own cancel flag.
    """
    if spaces.GPU(duration=gpu_duration)(generate_on_gpu) is generate_on_gpu:
        return engine
    return ZeroGPUBackend(engine, spaces.GPU)
