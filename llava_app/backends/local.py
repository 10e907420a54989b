"""The local engine: a LLaVA-family model in this process, with transformers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

from ..conversation import PromptInfo
from ..faults import OutOfMemory, drop_traceback, is_out_of_memory, release_memory
from ..images import ImageStore, ModelImageSize
from .base import Backend, ChatRequest, image_refs

log = logging.getLogger(__name__)


def _require_torch():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "The local backend needs torch and transformers: pip install -r requirements.txt "
            "(or use --backend openai with a remote server, which needs neither)."
        ) from exc


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for ``apply_chat_template``: image parts become bare ``{"type": "image"}``."""
    out = []
    for m in messages:
        parts = [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in m["content"]]
        out.append({"role": m["role"], "content": parts})
    return out


class LocalBackend(Backend):
    """Runs ``AutoModelForImageTextToText`` with the processor's own chat template.

    One generation at a time per model object (``self._lock``); each request gets a
    fresh ``TextIteratorStreamer`` and thread, and a stopping criterion that watches
    the request's cancel flag, so Stop ends the decode loop itself.
    """

    counts_tokens = True

    def __init__(self, model: str, image_store: ImageStore, device: str = "auto", dtype: str = "auto",
                 load_in_4bit: bool = False, load_in_8bit: bool = False, stream_delay: float = 0.0,
                 context_length: int | None = None):
        _require_torch()
        from ..models import LoadOptions, load_model_and_processor
        from ..tiny import is_tiny

        started = time.perf_counter()
        self.model, self.processor, self.path = load_model_and_processor(
            model, LoadOptions(device=device, dtype=dtype, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
        )
        log.info("loaded %s in %.1f s", model, time.perf_counter() - started)
        self.model_name = model
        self.is_random = is_tiny(model)
        self.images = image_store
        self.stream_delay = stream_delay
        text_config = self.model.config.get_text_config()
        self.context_length = context_length or getattr(text_config, "max_position_embeddings", None)
        self.device = next(self.model.parameters()).device
        self._lock = threading.Lock()

    # ----- prompt ---------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text from the model's chat template (image placeholders unexpanded)."""
        return self.processor.apply_chat_template(template_messages(messages), add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, messages: list[dict[str, Any]]):
        """Processor inputs (token ids with image tokens expanded, pixel values) and the prompt info."""
        text = self.render(messages)
        refs = image_refs(messages)
        pictures = [self.images.open(r.sha256) for r in refs]
        inputs = self.processor(text=text, images=pictures or None, return_tensors="pt")
        info = PromptInfo(text=text, n_images=len(refs), n_tokens=int(inputs["input_ids"].shape[1]),
                          image_labels=[r.label for r in refs])
        image_token_id = getattr(self.processor, "image_token_id", None)
        if image_token_id is not None:
            info.n_image_tokens = int((inputs["input_ids"] == image_token_id).sum())
        return inputs, info

    def image_resolution(self) -> ModelImageSize | None:
        return ModelImageSize.from_processor(self.processor.image_processor)

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        return self.encode(messages)[1]

    # ----- generation -----------------------------------------------------------------------
    def generation_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        """``generate`` arguments for the request's sampling parameters."""
        p = request.params
        kwargs: dict[str, Any] = {"max_new_tokens": int(p.max_new_tokens)}
        if p.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=float(p.temperature), top_p=float(p.top_p), top_k=None)
        return kwargs

    def stream(self, request: ChatRequest) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel, delay = request.cancel, self.stream_delay
        abandoned = threading.Event()  # the consumer went away without setting cancel

        class _Cancelled(StoppingCriteria):
            """Stops the decode loop when the request is cancelled (checked every step)."""

            def __call__(self, input_ids, scores, **kwargs):
                if delay > 0:  # test knob: emulate a slower model; wakes at once on cancel
                    cancel.wait(delay)
                return cancel.is_set() or abandoned.is_set()

        with self._lock:
            if cancel.is_set():
                return
            inputs, request.info = self.encode(request.messages)
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    self.model.generate(**inputs, **self.generation_kwargs(request), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancelled()]))
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                    failure.append(exc)
                    streamer.end()

            thread = threading.Thread(target=run, name="llava-generate", daemon=True)
            thread.start()
            try:
                for chunk in streamer:
                    if chunk:
                        yield chunk
                    if cancel.is_set():
                        break
            finally:
                abandoned.set()  # a consumer that stops early stops the model too
                thread.join()
                self._release_memory()
            if failure:
                exc = failure.pop()
                user = _user_facing(exc)
                if user is not exc:  # out of memory: let go of the failed step's tensors, then of the memory
                    drop_traceback(exc)
                    del exc, inputs
                    release_memory()
                    raise user from None
                raise exc

    def _release_memory(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        del self.model
        self._release_memory()


def _user_facing(exc: BaseException) -> BaseException:
    """Out-of-memory and similar faults as a message a user can act on."""
    return OutOfMemory() if is_out_of_memory(exc) else exc
