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
from typing import Any, Callable, Iterator

from llava_app.engine.spaces_support import gpu_seconds
from llava_app.engine.base import Backend, ChatRequest, GenerationParams, PromptInfo, image_refs

# Engines by key, reachable from ZeroGPU's forked worker (arguments must be picklable,
# a model is not). Holds engines, never conversations.
_ENGINES: dict[int, Backend] = {}
_KEYS = itertools.count(1)


def generate_on_gpu(key: int, messages: list[dict[str, Any]], params: GenerationParams,
                    session_id: str) -> Iterator[tuple[str, Any]]:
    """Stream one answer; yields ``("info", PromptInfo)`` once, then ``("text", chunk)`` items."""
    engine = _ENGINES[key]
    request = ChatRequest(messages, params, session_id=session_id)
    sent_info = False
    for chunk in engine.stream(request):
        if not sent_info and request.info is not None:
            sent_info = True
            yield "info", request.info
        yield "text", chunk
    if not sent_info and request.info is not None:
        yield "info", request.info


def gpu_duration(key: int, messages: list[dict[str, Any]], params: GenerationParams, session_id: str) -> int:
    """``spaces.GPU``'s callable duration: called with the same arguments as the GPU function."""
    return gpu_seconds(params.max_new_tokens, len(image_refs(messages)))


class ZeroGPUBackend(Backend):
    """Wraps an engine so each generation runs through ``gpu(duration=gpu_duration)``."""

    def __init__(self, engine: Backend, gpu: Callable[..., Any]):
        self.engine = engine
        self.key = next(_KEYS)
        _ENGINES[self.key] = engine
        self._generate = gpu(duration=gpu_duration)(generate_on_gpu)
        self.model_name = engine.model_name
        self.is_random = engine.is_random
        self.supports_images = engine.supports_images
        self.context_length = engine.context_length
        self.counts_tokens = engine.counts_tokens  # counting needs the processor only, no GPU

    def __getattr__(self, name: str) -> Any:
        # Engine-specific attributes (processor, device) read through to the engine.
        engine = self.__dict__.get("engine")
        if engine is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(engine, name)

    def stream(self, request: ChatRequest) -> Iterator[str]:
        if request.cancel.is_set():
            return
        items = self._generate(self.key, request.messages, request.params, request.session_id)
        try:
            for kind, value in items:
                if kind == "info":
                    request.info = value
                else:
                    yield value
                if request.cancel.is_set():
                    break
        finally:
            close = getattr(items, "close", None)
            if close:
                close()  # ZeroGPU then stops the worker's generator, and so the model

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        return self.engine.prompt_info(messages)  # the processor only: no GPU needed

    def image_resolution(self):
        return self.engine.image_resolution()

    def forget(self, session_id: str) -> None:
        self.engine.forget(session_id)

    def close(self) -> None:
        _ENGINES.pop(self.key, None)
        self.engine.close()


def on_gpu(engine: Backend, spaces: Any) -> Backend:
    """``engine`` wrapped for ZeroGPU, or as it is where ``spaces.GPU`` changes nothing.

    Off ZeroGPU (a local run, a Space on dedicated hardware) ``spaces.GPU`` returns the
    function itself; the engine is then used directly, with its own cancel flag.
    """
    if spaces.GPU(duration=gpu_duration)(generate_on_gpu) is generate_on_gpu:
        return engine
    return ZeroGPUBackend(engine, spaces.GPU)
