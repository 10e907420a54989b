"""The local engine: a LLaVA-family model in this process, with transformers."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Iterator

from llava_app.faults import out_of_memory_error
from llava_app.storage.images import ImageStore, ModelImageSize
from llava_app.engine.base import Backend, ChatRequest, PromptInfo, image_refs

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


def _defuse(text: str, reserved: tuple[str, ...]) -> str:
    """Spell the model's placeholder tokens apart in user or model text ("<image>" -> "< image>").

    A literal "<image>" typed by a user would otherwise become an image slot with no
    image, and the processor would refuse the whole prompt.
    """
    for token in reserved:
        if token and token in text:
            text = text.replace(token, token[0] + " " + token[1:])
    return text


def template_messages(messages: list[dict[str, Any]], reserved: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Messages for ``apply_chat_template``: image parts become bare ``{"type": "image"}``.

    ``reserved`` are placeholder tokens (the processor's image/video tokens) that text
    parts must not contain.
    """
    out = []
    for m in messages:
        parts = [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": _defuse(p["text"], reserved)}
                 for p in m["content"]]
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
                 context_length: int | None = None, kv_cache_bytes: int = 2048 * 2**20,
                 feature_cache_bytes: int = 512 * 2**20):
        _require_torch()
        from llava_app.engine.models import LoadOptions, load_model_and_processor
        from llava_app.engine.tiny import is_tiny

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
        # Multi-turn reuse (kvcache.py): per-session prefix KV and cached image features.
        from llava_app.engine.kvcache import PrefixReuse, RunStats

        # Look the store up on each call: whoever holds the engine may hand it another store.
        self.reuse = PrefixReuse(self.model, self.processor, lambda sha: self.images.open(sha), model_id=str(self.path),
                                 kv_budget_bytes=kv_cache_bytes, feature_budget_bytes=feature_cache_bytes)
        #: what the engine did for the latest request (reused tokens, images encoded, new token ids)
        self.last_run: RunStats | None = None

    # ----- prompt ---------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text from the model's chat template (image placeholders unexpanded)."""
        reserved = tuple(t for t in (getattr(self.processor, "image_token", None),
                                     getattr(self.processor, "video_token", None)) if t)
        return self.processor.apply_chat_template(template_messages(messages, reserved), add_generation_prompt=True,
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
        """The prompt and its exact token count, as ``stream`` would build it; pixels are processed
        only for images this engine has not seen (their placeholder sizes are cached)."""
        text = self.render(messages)
        refs = image_refs(messages)
        try:
            ids, spans, *_ = self.reuse.layout(text, [r.sha256 for r in refs])
        except ValueError:
            return self.encode(messages)[1]
        return PromptInfo(text=text, n_images=len(refs), n_tokens=int(ids.numel()),
                          image_labels=[r.label for r in refs], n_image_tokens=sum(s.stop - s.start for s in spans))

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
        from transformers import StoppingCriteria, StoppingCriteriaList

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
            # Only the tokens after the longest prefix this session has cached are fed; images
            # after it come from the feature cache (or are encoded once).
            text = self.render(request.messages)
            refs = image_refs(request.messages)
            prepared = self.reuse.prepare(request.session_id, text, [r.sha256 for r in refs])
            stats = self.last_run = prepared.stats
            request.info = PromptInfo(text=text, n_images=len(refs), n_tokens=stats.prompt_tokens,
                                      image_labels=[r.label for r in refs], n_image_tokens=stats.image_tokens)
            streamer = _timed_streamer(stats, self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
            failure: list[BaseException] = []

            def run() -> None:
                import torch

                sequences = None
                try:
                    # inference_mode, not just generate's no_grad: less bookkeeping per op, which
                    # shows on small models; the kept KV tensors are only ever used this way.
                    with torch.inference_mode():
                        sequences = self.model.generate(**prepared.generate_kwargs, **self.generation_kwargs(request),
                                                        streamer=streamer,
                                                        stopping_criteria=StoppingCriteriaList([_Cancelled()]))
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                    failure.append(exc)
                    streamer.end()
                finally:
                    self.reuse.finish(prepared, sequences, ok=sequences is not None)
                    stats.finished_at = time.perf_counter()
                    if sequences is not None:
                        stats.new_token_ids = sequences[0, prepared.input_ids.shape[1]:].tolist()

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
                del prepared  # out of memory: the failed step's inputs must go before the memory is released
                oom = out_of_memory_error(exc)
                if oom is not None:
                    raise oom from None
                raise exc

    def _release_memory(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def forget(self, session_id: str) -> None:
        """Free the session's cached KV (its images' features stay cached for the model)."""
        self.reuse.forget(session_id)

    def close(self) -> None:
        self.reuse.clear()
        del self.model
        self._release_memory()


def _timed_streamer(stats, tokenizer, **kwargs):
    """A ``TextIteratorStreamer`` that notes when the first new token arrived (in ``stats``)."""
    streamer = _timed_streamer_class()(tokenizer, **kwargs)
    streamer.stats = stats
    return streamer


@functools.lru_cache(maxsize=1)
def _timed_streamer_class():
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        stats = None

        def put(self, value):
            # The first call carries the prompt; the next one the first new token.
            if not self.next_tokens_are_prompt and self.stats.first_token_at is None:
                self.stats.first_token_at = time.perf_counter()
            super().put(value)

    return TimedStreamer
