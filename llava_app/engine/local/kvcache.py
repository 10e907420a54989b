"""Multi-turn reuse for the local engine: per-session prefix KV caches and an image-feature cache.

A chat turn's prompt is the previous turn's prompt and answer plus a little new text, so
most of it was already read by the model. ``PrefixReuse`` keeps each session's KV cache
after a turn, with the token ids it covers and where each image's tokens lie, and on the
next turn feeds only what follows the longest common prefix (token ids equal, and every
image inside the prefix the same picture at the same place). Whatever the edit (Undo,
Regenerate, an earlier question edited, a new system prompt, an image removed), only the part
that still matches is reused, never more. A session keeps one prefix per branch of its
conversation (prefixes.py): an edit copies the shared part and leaves the other branch's
cache for a switch back.

Images are encoded by the vision tower once per model: their projected features are kept
in a bounded LRU keyed by the image's content hash, and are handed to ``generate`` as
``mm_encoder_outputs`` for the images after the reused prefix, so neither pixels nor the
vision tower are needed for an image seen before, even after its session's KV was evicted.

Session caches share a byte budget; the least recently used are evicted first, and an
evicted session simply reads its prompt again (with cached image features).

torch and transformers are imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from llava_app.engine.local.compat import processing_kwargs
from llava_app.engine.local.lru import ByteLRU
from llava_app.engine.local.mrope import encoder_outputs, feature_bytes, image_runs, rope_positions
from llava_app.engine.local.prefixes import ImageSpan, SessionPrefixes, entry_for
from llava_app.engine.local.prompt_ids import PromptIds
from llava_app.engine.local.token_record import TokenRecords

log = logging.getLogger(__name__)

@dataclass
class RunStats:
    """What the engine did for one request (its ``Usage`` event is made from it). Timing is the consumer's."""

    session_id: str = ""
    prompt_tokens: int = 0
    reused_tokens: int = 0  # read from the session's KV cache
    prefilled_tokens: int = 0  # fed to the model before the first new token
    images: int = 0
    image_tokens: int = 0  # of prompt_tokens, those standing for images
    images_encoded: int = 0  # run through the vision tower for this request
    image_feature_hits: int = 0  # taken from the feature cache
    prompt_ids: Any = None  # the prompt's token ids as given to the model (1-D, CPU)
    new_token_ids: list[int] = field(default_factory=list)


@dataclass
class Prepared:
    """Everything ``generate`` needs for one request, and what to record afterwards."""

    session_id: str
    text: str
    input_ids: Any
    spans: tuple[ImageSpan, ...]
    generate_kwargs: dict[str, Any]
    stats: RunStats
    cache: Any = None
    #: M-RoPE (Qwen-VL): what a token after the prompt adds to its index to get its rotary position (0 elsewhere)
    rope_delta: int = 0


class PrefixReuse:
    """Builds each request's model inputs with prefix KV reuse and cached image features.

    Not thread-safe by itself for generation: the engine calls ``prepare``/``finish``
    under its one-generation-at-a-time lock. ``forget`` may come from any thread.

    Args:
        model: a LLaVA-family ``...ForConditionalGeneration`` (LLaVA, LLaVA-NeXT, OneVision).
        processor: its processor (chat template, image processor, tokenizer).
        open_image: ``sha256 -> PIL image`` (the app's ``ImageStore.open``).
        model_id: names the model in feature-cache keys.
        kv_budget_bytes: bytes of KV kept across all sessions; 0 keeps none (every turn re-reads its prompt).
        feature_budget_bytes: bytes of image features kept; 0 keeps none.
        tokenizer_lock: held around every tokenizer call (the engine's one lock; a fast
            tokenizer used from two threads at once fails with "Already borrowed").
    """

    def __init__(self, model, processor, open_image: Callable[[str], Any], model_id: str,
                 kv_budget_bytes: int, feature_budget_bytes: int, tokenizer_lock: Any = None):
        self.model, self.processor, self.open_image, self.model_id = model, processor, open_image, model_id
        self.device = next(model.parameters()).device
        self.image_token = processor.image_token
        self.image_token_id = int(model.config.image_token_id)
        #: Qwen-VL's multimodal rotary positions: three per token, pictures laid out in 2-D, text after them shifted
        #: (``rope_delta``). The engine computes them for the whole prompt and hands them to the model, so a
        #: reused prefix, cached features, an edit point and a batched step all place tokens as a fresh read would
        #: (the model's own fallback keeps one ``rope_deltas`` for whichever request ran last).
        self.mrope = callable(getattr(model.model, "get_rope_index", None))
        self._grids: dict[tuple, Any] = {}  # Qwen-VL: each picture's (t, h, w) patch grid, beside its replacement
        self.kv = SessionPrefixes(kv_budget_bytes)  # several per session: one per branch (prefixes.py)
        self.features = ByteLRU[tuple, Any](feature_budget_bytes)
        # Replacement strings (the image's placeholder tokens) are tiny; kept longer than features.
        self._replacements: OrderedDict[tuple, str] = OrderedDict()
        self._max_replacements = 4096
        # The pixels of the newest images processed, for the vision tower right after: the prompt
        # is usually counted (context fitting) just before it is generated from.
        self._last_processed: tuple[tuple[str, ...], Any] | None = None
        self._layout_lock = threading.RLock()  # layout() also serves prompt counts from other threads
        # The latest prompt laid out (context fitting counts the prompt the engine lays out next)
        self._last_layout: tuple[tuple[str, tuple[str, ...]], Any, tuple[ImageSpan, ...]] | None = None
        self._checked_out: dict[str, bool] = {}  # session -> forgotten while generating
        self._lock = threading.Lock()
        self.vision_calls = self.images_encoded = 0
        self._tokenizer_lock = tokenizer_lock or nullcontext()
        # Each session's ids: answers keep their generated ids (re-tokenising them may break the prefix).
        self.records = TokenRecords(processor.tokenizer, tokenizer_lock=tokenizer_lock)
        self._kwargs = processing_kwargs(processor)
        #: prompts are laid out here (prefix reuse, cached features); off when transformers lacks what it needs
        self.layout_ok = self._kwargs is not None
        self._prompt_ids = PromptIds(processor, (self._kwargs or {}).get("text", {}), self.image_token,
                                     self.image_token_id, tokenizer_lock)
        self.reuse_kv = self.layout_ok and kv_budget_bytes > 0 and self._croppable()
        if self.layout_ok and kv_budget_bytes > 0 and not self.reuse_kv:
            log.info("KV reuse is off: this model's cache has layers that cannot be cropped (sliding window)")

    # ----- setup ----------------------------------------------------------------------------
    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def full_attention(self) -> bool:
        """True when every layer keeps its whole past (no sliding window): cacheable, croppable, batchable."""
        return self._croppable()

    def _croppable(self) -> bool:
        """True when every layer keeps its whole past (plain full-attention layers can be cropped)."""
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in self._new_cache().layers)

    # ----- images -------------------------------------------------------------------------
    def _feature_key(self, sha256: str) -> tuple:
        return (self.model_id, sha256)

    def _process(self, shas: list[str]):
        """Pixel inputs for these images, as the processor makes them, and each one's placeholder text."""
        images_kwargs = self._kwargs["images"]
        processed = self.processor.image_processor([self.open_image(s) for s in shas], **images_kwargs)
        repl = [self.processor.replace_image_token(processed, image_idx=i, **images_kwargs) for i in range(len(shas))]
        grids = processed.get("image_grid_thw")
        with self._layout_lock:
            for i, (sha, r) in enumerate(zip(shas, repl, strict=False)):
                self._remember_replacement(sha, r, None if grids is None else grids[i].clone())
            self._last_processed = (tuple(shas), processed)
        return processed

    def _remember_replacement(self, sha: str, replacement: str, grid=None) -> None:
        key = self._feature_key(sha)
        self._replacements[key] = replacement
        self._replacements.move_to_end(key)
        if grid is not None:
            self._grids[key] = grid
        while len(self._replacements) > self._max_replacements:
            old, _ = self._replacements.popitem(last=False)
            self._grids.pop(old, None)

    def _encode(self, shas: list[str], processed=None) -> list[Any]:
        """Run the vision tower and projector on these images (one batch); returns per-image features."""
        import inspect

        import torch

        if processed is None:
            with self._layout_lock:
                last = self._last_processed
            processed = last[1] if last is not None and last[0] == tuple(shas) else self._process(shas)
        base = self.model.model
        accepted = set(inspect.signature(base.get_image_features).parameters)
        kwargs = {k: v for k, v in processed.items() if k in accepted}
        for k, v in kwargs.items():
            if hasattr(v, "to"):
                kwargs[k] = v.to(self.device)
        kwargs["pixel_values"] = kwargs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = base.get_image_features(**kwargs, return_dict=True)
        feats = list(out.pooler_output)
        if len(feats) != len(shas):  # pragma: no cover - a family that batches differently
            raise RuntimeError(f"expected features for {len(shas)} images, got {len(feats)}")
        self.vision_calls += 1
        self.images_encoded += len(shas)
        # Own copies: the per-image features are views of one batch tensor, which would stay
        # alive (and be miscounted) as long as any one of them is cached.
        feats = [f.detach().clone() for f in feats]
        deep = getattr(out, "deepstack_features", None)  # Qwen3-VL: features for early text layers too
        if deep:
            feats = [(f, tuple(layer[i].detach().clone() for layer in deep)) for i, f in enumerate(feats)]
        for sha, f in zip(shas, feats, strict=False):
            self.features.put(self._feature_key(sha), f, feature_bytes(f))
        return feats

    # ----- prompt -------------------------------------------------------------------------
    def layout(self, text: str, shas: list[str]):
        """Token ids of ``text`` (placeholders expanded as the processor does) and each image's span.

        Returns ``(ids, spans, processed, processed_shas)``; ``processed`` holds pixel inputs
        made along the way for images never seen before (reused by ``_encode``).
        """
        import torch

        if not self.layout_ok:
            raise ValueError("this transformers version lacks what the prompt layout needs")
        with self._layout_lock:
            missing = [s for s in dict.fromkeys(shas) if self._feature_key(s) not in self._replacements]
            processed = self._process(missing) if missing else None
            repl = [self._replacements[self._feature_key(s)] for s in shas]
            for s in shas:  # keep the ones in use fresh
                self._replacements.move_to_end(self._feature_key(s))
        if text.count(self.image_token) != len(shas):
            raise ValueError(f"the prompt has {text.count(self.image_token)} image placeholders for {len(shas)} images")
        key = (text, tuple(shas))
        last = self._last_layout  # tokenising a long prompt's image placeholders is the costly part
        if processed is None and last is not None and last[0] == key:
            return last[1].clone(), last[2], None, missing
        ids = torch.as_tensor(self._prompt_ids(text, repl), dtype=torch.long).flatten().cpu()
        spans, pos = [], 0
        is_image = (ids == self.image_token_id).tolist()
        for sha, r in zip(shas, repl, strict=False):
            n = r.count(self.image_token)
            while pos < len(is_image) and not is_image[pos]:
                pos += 1
            if pos + n > len(is_image) or not all(is_image[pos:pos + n]):
                raise ValueError("image placeholder tokens are not where the processor's layout puts them")
            spans.append(ImageSpan(pos, pos + n, sha))
            pos += n
        if sum(is_image) != sum(s.stop - s.start for s in spans):
            raise ValueError("the prompt has image tokens that belong to no image")
        self._last_layout = (key, ids.clone(), tuple(spans))
        return ids, tuple(spans), processed, missing

    # ----- a request -----------------------------------------------------------------------
    def prepare(self, session_id: str, text: str, shas: list[str], new_branch: bool = False) -> Prepared:
        """The ``generate`` inputs for this prompt: the session's cache cropped to the common prefix
        (copied, the original kept, for a ``new_branch``), and features only for the images after it."""
        import torch

        stats = RunStats(session_id=session_id, images=len(shas))
        try:
            with torch.inference_mode():
                return self._prepare(session_id, text, shas, stats, new_branch)
        except BaseException:
            self._return(session_id)  # a checked-out cache is dropped, not put back half-cropped
            raise

    def _prepare(self, session_id: str, text: str, shas: list[str], stats: RunStats, new_branch: bool) -> Prepared:
        import torch

        if not self.layout_ok:  # compat.py warned once already
            return self._whole(session_id, text, shas, stats)
        try:
            ids, spans, processed, processed_shas = self.layout(text, shas)
        except ValueError as exc:  # a processor whose placeholders this engine cannot lay out
            log.warning("prefix reuse off for this prompt (%s); the processor reads it whole", exc)
            return self._whole(session_id, text, shas, stats)
        ids, spans = self.records.keep_recorded_ids(session_id, ids, spans, self.image_token_id, ImageSpan)
        stats.prompt_tokens = int(ids.numel())
        stats.image_tokens = sum(s.stop - s.start for s in spans)
        stats.prompt_ids = ids

        cache, n = self._take(session_id, ids, spans, new_branch) if (self.reuse_kv and session_id) else (None, 0)
        if cache is None:
            cache = self._new_cache() if self.reuse_kv else None
        stats.reused_tokens = n
        stats.prefilled_tokens = int(ids.numel()) - n

        todo = [s for s in spans if s.start >= n]
        rope_delta = 0
        if self.mrope:
            with self._layout_lock:
                grids = [self._grids.get(self._feature_key(s.sha256)) for s in spans]
            if any(g is None for g in grids):  # evicted since the layout (thousands of pictures later)
                self._process(list(dict.fromkeys(s.sha256 for s in spans)))
                grids = [self._grids[self._feature_key(s.sha256)] for s in spans]
            positions, rope_delta = rope_positions(self.model, ids, spans, grids)
        feats: dict[str, Any] = {}
        for span in todo:
            f = self.features.get(self._feature_key(span.sha256))
            if f is not None:
                feats[span.sha256] = f
                stats.image_feature_hits += 1
        need = list(dict.fromkeys(s.sha256 for s in todo if s.sha256 not in feats))
        if need:
            batch = processed if processed is not None and processed_shas == need else None
            for sha, f in zip(need, self._encode(need, batch), strict=False):
                feats[sha] = f
            stats.images_encoded = len(need)

        input_ids = ids.unsqueeze(0).to(self.device)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if cache is not None:
            kwargs["past_key_values"] = cache
        if self.mrope:  # the whole prompt's: generate feeds the part after the cache and counts on from the last
            kwargs["position_ids"] = positions.to(self.device)
        if todo:
            kwargs["mm_encoder_outputs"] = {"image": encoder_outputs([feats[s.sha256] for s in todo])}
        return Prepared(session_id, text, input_ids, spans, kwargs, stats, cache, rope_delta)

    def _whole(self, session_id: str, text: str, shas: list[str], stats: RunStats) -> Prepared:
        """The plain path: the processor on the whole prompt and every image, no cache kept."""
        self._return(session_id)
        self.kv.pop(session_id)
        pictures = [self.open_image(s) for s in shas] or None
        with self._tokenizer_lock:
            inputs = self.processor(text=text, images=pictures, return_tensors="pt")
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        stats.prompt_tokens = stats.prefilled_tokens = int(inputs["input_ids"].shape[1])
        stats.prompt_ids = inputs["input_ids"][0].cpu()
        stats.image_tokens = int((stats.prompt_ids == self.image_token_id).sum())
        stats.images_encoded = len(shas)
        kwargs, rope_delta = dict(inputs), 0
        if self.mrope:
            grids = inputs.get("image_grid_thw")
            spans = image_runs(stats.prompt_ids, self.image_token_id)
            positions, rope_delta = rope_positions(self.model, stats.prompt_ids, spans,
                                                   [] if grids is None else list(grids.cpu()))
            kwargs["position_ids"] = positions.to(self.device)
        return Prepared("", text, inputs["input_ids"], (), kwargs, stats, rope_delta=rope_delta)

    def finish(self, prepared: Prepared, sequences, ok: bool) -> None:
        """Keep the session's cache for its next turn (or drop it when generation failed)."""
        sid = prepared.session_id
        cache = prepared.cache
        forgotten = self._return(sid)
        self.records.remember(sid, sequences if ok and not forgotten else None)
        if not (ok and cache is not None and sid and self.reuse_kv) or forgotten:
            return
        entry = entry_for(sequences, cache, prepared.spans)
        if entry is not None and not self.kv.put(sid, entry, entry.nbytes):
            log.info("session %s: its KV cache (%.1f MB) is larger than the whole budget; not kept",
                     sid[:8], entry.nbytes / 2**20)

    def forget(self, session_id: str) -> None:
        """Free a session's cache now (closed tab, new chat); a generation in flight keeps none."""
        with self._lock:
            if session_id in self._checked_out:
                self._checked_out[session_id] = True
        self.kv.pop(session_id)
        self.records.forget(session_id)

    def clear(self) -> None:
        """Drop every session's KV and every cached image feature."""
        self.kv.clear()
        self.records.clear()
        self.features.clear()
        with self._layout_lock:
            self._replacements.clear()
            self._grids.clear()
            self._last_processed = None
            self._last_layout = None

    def _take(self, session_id: str, ids, spans, new_branch: bool) -> tuple[Any, int]:
        """Check a session out for a generation; ``(cache, n)``: its best prefix for these ids (``kv.take``)."""
        with self._lock:
            self._checked_out[session_id] = False
        return self.kv.take(session_id, ids, spans, self._new_cache, keep=new_branch)

    def _return(self, session_id: str) -> bool:
        """End a checkout; True when the session was forgotten meanwhile."""
        with self._lock:
            return self._checked_out.pop(session_id, False)
