"""The local engine: a LLaVA-family model in this process, with transformers."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from llava_app.engine.base import (
    Backend,
    ChatRequest,
    Event,
    PromptInfo,
    PromptReady,
    Queued,
    TextDelta,
    Usage,
    image_refs,
)
from llava_app.engine.geometry import PictureGeometry
from llava_app.engine.local.streaming import LockedDecoder, eager_streamer, texts, user_facing
from llava_app.engine.tiny.presets import is_tiny
from llava_app.errors import EngineError, MissingDependency
from llava_app.storage.images import ImageStore, ModelImageSize

log = logging.getLogger(__name__)

#: how often the consumer wakes while waiting for text, to notice a generate thread that died
POLL_S = 0.5


def _require_torch():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependency("model.needs_torch") from exc


def _defuse(text: str, reserved: tuple[str, ...]) -> str:
    """Spell the model's placeholder tokens apart in user or model text ("<image>" -> "< image>").

    A literal "<image>" typed by a user would otherwise become an image slot with no
    image, and the processor would refuse the whole prompt.
    """
    for token in reserved:
        if token and token in text:
            text = text.replace(token, token[0] + " " + token[1:])
    return text


def template_messages(messages: list[dict[str, Any]], reserved: tuple[str, ...] = (),
                      inline: str | None = None) -> list[dict[str, Any]]:
    """Messages for ``apply_chat_template``: image parts become bare ``{"type": "image"}``.

    ``reserved`` are placeholder tokens (the processor's image/video tokens) that text
    parts must not contain. ``inline`` (the image token, for a template that would put every picture
    before the text: ``inline_image_token``) writes a message's parts as one text, each picture's token
    where it stands, so each label stays next to its picture: "Image 1:<image>\nImage 2:<image>\nWhich...".
    """
    out = []
    for m in messages:
        parts = [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": _defuse(p["text"], reserved)}
                 for p in m["content"]]
        if inline and any(p["type"] == "image" for p in parts):
            parts = [{"type": "text", "text": "".join(inline + "\n" if p["type"] == "image" else p["text"]
                                                      for p in parts)}]
        out.append({"role": m["role"], "content": parts})
    return out


def inline_image_token(processor: Any) -> str | None:
    """The image token, when the model's chat template would move a message's pictures away from the text
    around them (the llava-hf templates write every ``<image>`` first, then the texts); None when it keeps
    the parts in order (Qwen's)."""
    token = getattr(processor, "image_token", None)
    if not token or getattr(processor, "chat_template", None) is None:
        return None
    probe = [{"role": "user", "content": [{"type": "text", "text": "\u2460"}, {"type": "image"},
                                          {"type": "text", "text": "\u2461"}]}]
    try:
        text = processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe: leave its parts to it
        return None
    first, image, second = text.find("\u2460"), text.find(token), text.find("\u2461")
    return None if min(first, image, second) < 0 or first < image < second else token


def default_max_batch(device) -> int:
    """Sequences decoded together when ``--max-batch`` is 0: 8 on a GPU, 4 on the CPU."""
    return 8 if getattr(device, "type", str(device)) == "cuda" else 4


class LocalBackend(Backend):
    """Runs ``AutoModelForImageTextToText`` with the processor's own chat template.

    Up to ``max_batch`` generations at once, decoded together by one scheduler thread
    (batching.py); each request gets a fresh ``TextIteratorStreamer``, and the scheduler
    checks the request's cancel flag before every step, so Stop ends that sequence's decoding.
    Where batching cannot work (a sliding-window cache, another attention than ``sdpa``,
    ZeroGPU's forked workers: ``batch=False``), one generation at a time (``self._lock``)
    runs in ``generate`` on a thread of its own, with a stopping criterion on the cancel flag. Every tokenizer
    call (prompt layout, counting, the streamer's decoding) holds ``tokenizer_lock``:
    a fast tokenizer used by two threads at once fails ("Already borrowed").
    """

    counts_tokens = True

    def __init__(self, model: str, image_store: ImageStore, device: str = "auto", dtype: str = "auto",
                 load_in_4bit: bool = False, load_in_8bit: bool = False, stream_delay: float = 0.0,
                 context_length: int | None = None, kv_cache_bytes: int = 2048 * 2**20,
                 feature_cache_bytes: int = 512 * 2**20, max_batch: int = 0, batch: bool = True,
                 image_pixels: str = ""):
        _require_torch()
        from llava_app.engine.local.kvcache import PrefixReuse, RunStats
        from llava_app.engine.local.models import LoadOptions, load_model_and_processor

        started = time.perf_counter()
        self.model, self.processor, self.path = load_model_and_processor(
            model, LoadOptions(device=device, dtype=dtype, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
        )
        log.info("loaded %s in %.1f s", model, time.perf_counter() - started)
        from llava_app.config import pixel_bounds
        from llava_app.engine.local.processors import bound_pixels

        bound_pixels(self.processor, *pixel_bounds(image_pixels))
        self.model_name = model
        self.model_type = str(getattr(self.model.config, "model_type", "") or "")
        self.is_random = is_tiny(model)
        self.images = image_store
        self.stream_delay = stream_delay
        self.context_length = context_length or self.model.config.get_text_config().max_position_embeddings
        self.device = next(self.model.parameters()).device
        self._lock = threading.Lock()
        self.tokenizer_lock = threading.RLock()
        # The processor's placeholder tokens, which user text must not contain (LLaVA processors declare both).
        self._reserved = tuple(t for t in (self.processor.image_token, getattr(self.processor, "video_token", None))
                               if t)
        #: the image token written inline, where the model's template would move pictures away from their labels
        self.inline_images = inline_image_token(self.processor)
        # Multi-turn reuse (kvcache.py): per-session prefix KV and cached image features.
        # Look the store up on each call: whoever holds the engine may hand it another store.
        self.reuse = PrefixReuse(self.model, self.processor, lambda sha: self.images.open(sha), model_id=str(self.path),
                                 kv_budget_bytes=kv_cache_bytes, feature_budget_bytes=feature_cache_bytes,
                                 tokenizer_lock=self.tokenizer_lock)
        #: what the engine did for the latest request (diagnostics for tests and benchmarks; the app reads ``Usage``)
        self.last_run: RunStats | None = None
        #: the batching scheduler (None: one generation at a time through ``generate``)
        self.scheduler = self._scheduler(max_batch or default_max_batch(self.device), kv_cache_bytes) if batch else None
        self.max_concurrency = self.scheduler.max_batch if self.scheduler is not None else 1

    def _scheduler(self, max_batch: int, kv_budget_bytes: int):
        """The batching scheduler, where this model's cache and attention allow it (else None)."""
        from llava_app.engine.local.batch_kv import register_rows_attention
        from llava_app.engine.local.batching import Scheduler

        text = self.model.config.get_text_config()
        if not self.reuse.full_attention() or text._attn_implementation != "sdpa":
            log.info("batched decoding is off for this model (sliding-window cache or %s attention): "
                     "one answer at a time", text._attn_implementation)
            return None
        try:
            self.model.set_attn_implementation({"text_config": register_rows_attention()})
        except Exception as exc:  # noqa: BLE001 - a transformers release without this: one answer at a time
            log.warning("batched decoding is off: the row-wise attention could not be set (%s)", exc, exc_info=True)
            return None
        if text._attn_implementation != register_rows_attention():
            log.warning("batched decoding is off: transformers kept %s attention", text._attn_implementation)
            return None
        return Scheduler(self, max_batch, kv_budget_bytes)

    # ----- prompt ---------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text from the model's chat template (image placeholders unexpanded)."""
        with self.tokenizer_lock:
            return self.processor.apply_chat_template(template_messages(messages, self._reserved, self.inline_images),
                                                      add_generation_prompt=True, tokenize=False)

    def encode(self, messages: list[dict[str, Any]]):
        """Processor inputs (token ids with image tokens expanded, pixel values) and the prompt info."""
        text = self.render(messages)
        refs = image_refs(messages)
        pictures = [self.images.open(r.sha256) for r in refs]
        with self.tokenizer_lock:
            inputs = self.processor(text=text, images=pictures or None, return_tensors="pt")
        ids = inputs["input_ids"]
        return inputs, PromptInfo(text=text, n_images=len(refs), n_tokens=int(ids.shape[1]),
                                  image_labels=[r.label for r in refs],
                                  n_image_tokens=int((ids == self.processor.image_token_id).sum()))

    def image_resolution(self) -> ModelImageSize | None:
        return ModelImageSize.from_processor(self.processor.image_processor)

    def picture_geometry(self) -> PictureGeometry:
        return PictureGeometry.from_processor(self.processor.image_processor)

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

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.prompt_info(messages).n_tokens

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

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        if self.scheduler is not None:
            yield from self._stream_batched(request)
            return
        cancel = request.cancel
        with self._lock:
            if cancel.is_set():
                return
            # Only the tokens after the longest prefix this session has cached are fed; images
            # after it come from the feature cache (or are encoded once).
            text = self.render(request.messages)
            refs = image_refs(request.messages)
            prepared = self.reuse.prepare(request.session_id, text, [r.sha256 for r in refs], request.new_branch)
            stats = self.last_run = prepared.stats
            abandoned = threading.Event()  # the consumer went away without setting cancel
            streamer = self._streamer()
            failure: list[BaseException] = []
            thread = threading.Thread(target=self._generate, name="llava-generate", daemon=True,
                                      args=(request, prepared, streamer, abandoned, failure))
            thread.start()
            try:
                yield PromptReady(PromptInfo(text=text, n_images=len(refs), n_tokens=stats.prompt_tokens,
                                             image_labels=[r.label for r in refs], n_image_tokens=stats.image_tokens))
                for piece in texts(streamer, thread):
                    if piece:
                        yield TextDelta(piece)
                    if cancel.is_set():
                        break
            finally:
                abandoned.set()  # a consumer that stops early stops the model too
                thread.join()
                self._release_memory()
            if failure:
                del prepared  # out of memory: the failed step's inputs must go before the memory is released
                raise user_facing(failure.pop())
        yield self._usage(request, stats, stopped=cancel.is_set())

    def _stream_batched(self, request: ChatRequest) -> Iterator[Event]:
        """The request's events while the scheduler prefills it and decodes it with the others."""
        from llava_app.engine.local.batching import Job

        if request.cancel.is_set():
            return
        refs = image_refs(request.messages)
        job = Job(request, self.render(request.messages), [r.sha256 for r in refs], [r.label for r in refs],
                  self._streamer(skip_prompt=False), self.generation_kwargs(request))
        self.scheduler.submit(job)
        failure = None
        try:
            while True:
                try:
                    item = job.out.get(timeout=POLL_S)
                except queue.Empty:
                    if not job.done.is_set() and not self.scheduler.alive():
                        raise EngineError("The model stopped answering; ask again.") from None
                    continue
                if item is job.streamer.stop_signal:
                    break
                if isinstance(item, BaseException):
                    failure = item
                    break
                if isinstance(item, (PromptReady, Queued)):
                    yield item
                elif item:
                    yield TextDelta(item)
                if request.cancel.is_set():
                    break
        finally:
            job.abandoned.set()  # a consumer that stops early stops its sequence too
            self.scheduler.wake()
            while not job.done.wait(POLL_S) and self.scheduler.alive():
                pass  # the sequence leaves before the next step; its KV is then back with its session
            self.scheduler.settle()
        if failure is not None:
            raise user_facing(failure)
        if job.stats is not None:
            yield self._usage(request, job.stats, stopped=request.cancel.is_set())

    def _streamer(self, skip_prompt: bool = True):
        """A fresh ``TextIteratorStreamer`` whose decoding holds the tokenizer lock (whole characters at once)."""
        return eager_streamer()(LockedDecoder(self.processor.tokenizer, self.tokenizer_lock), skip_prompt=skip_prompt,
                                 timeout=POLL_S, skip_special_tokens=True)

    def _generate(self, request: ChatRequest, prepared, streamer, abandoned: threading.Event,
                  failure: list[BaseException]) -> None:
        """The generate thread: runs the model, feeds ``streamer``, and keeps the session's cache."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel, delay = request.cancel, self.stream_delay

        class _Cancelled(StoppingCriteria):
            """Stops the decode loop when the request is cancelled (checked every step)."""

            def __call__(self, input_ids, scores, **kwargs):
                if delay > 0:  # test knob: emulate a slower model; wakes at once on cancel
                    cancel.wait(delay)
                return cancel.is_set() or abandoned.is_set()

        sequences = None
        try:
            # inference_mode, not just generate's no_grad: less bookkeeping per op, which
            # shows on small models; the kept KV tensors are only ever used this way.
            with torch.inference_mode():
                sequences = self.model.generate(**prepared.generate_kwargs, **self.generation_kwargs(request),
                                                streamer=streamer,
                                                stopping_criteria=StoppingCriteriaList([_Cancelled()]))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure.append(exc)
            try:
                streamer.end()
            except BaseException:  # noqa: BLE001 - the consumer notices the thread ended (``_texts``)
                pass
        finally:
            self.reuse.finish(prepared, sequences, ok=sequences is not None)
            if sequences is not None:
                prepared.stats.new_token_ids = sequences[0, prepared.input_ids.shape[1]:].tolist()

    @staticmethod
    def _usage(request: ChatRequest, stats, stopped: bool) -> Usage:
        completion = len(stats.new_token_ids)
        if stopped:
            reason = "cancelled"
        else:
            reason = "length" if completion >= request.params.max_new_tokens else "stop"
        return Usage(prompt_tokens=stats.prompt_tokens, completion_tokens=completion, finish_reason=reason,
                     prefilled_tokens=stats.prefilled_tokens, images_encoded=stats.images_encoded,
                     images_cached=stats.images - stats.images_encoded)

    def _release_memory(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def forget(self, session_id: str) -> None:
        """Free the session's cached KV (its images' features stay cached for the model)."""
        self.reuse.forget(session_id)

    def close(self) -> None:
        """Drop the model, the processor (tokenizer) and every cache; the engine is unusable after."""
        if self.scheduler is not None:
            self.scheduler.close()
        self.reuse.clear()
        del self.reuse, self.model, self.processor
        self.last_run = None
        self._release_memory()
