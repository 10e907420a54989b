"""Several requests on one model at once: the local engine's scheduler (continuous batching).

One thread owns the model. A new request is prepared and prefilled on its own, with the session's
prefix KV and the image-feature cache (kvcache.py), by ``generate`` for one token; its cache is then
copied into a row of the batch's KV (batch_kv.py), and from then on every running sequence moves
one token per decode step, all in one forward pass. Requests join between steps; a finished,
stopped or abandoned sequence leaves between steps, its KV copied out and kept for its session's
next turn as a single request's would be. Each sequence keeps its own sampling parameters, logits
processors and random generator (seeded from ``GenerationParams.seed`` when given); its processors are the ones
``generate`` would build from the checkpoint's ``generation_config`` and the request's settings (``Sampler``).

Memory: the batch's KV buffer shares ``--kv-cache-mb`` with the prefixes kept between turns (they
are evicted to make room); a second sequence joins only if the grown buffer fits in the budget,
else it waits for a row to free (a lone sequence always runs, as before), and hears its place
(``Queued``, shown on the page) each time it changes; a stopped one leaves the wait at once. A step that runs out of
memory is retried on halves of the batch, down to one sequence: only a sequence that fails alone is
ended (its user told "out of memory"); the others go on, in smaller steps until the batch empties.

torch and transformers are imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llava_app.engine.base import ChatRequest, PromptInfo, PromptReady, Queued
from llava_app.engine.local.batch_kv import BatchKV
from llava_app.errors import EngineError
from llava_app.faults import is_out_of_memory, release_memory

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One request in the scheduler: what it asks, where its text goes, and how far it is."""

    request: ChatRequest
    text: str
    shas: list[str]
    labels: list[str]
    streamer: Any  # the engine's streamer; its ``text_queue`` is what the consumer reads
    kwargs: dict[str, Any]  # ``LocalBackend.generation_kwargs``
    abandoned: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    prepared: Any = None
    stats: Any = None
    sampler: Any = None
    ids: list[int] = field(default_factory=list)  # prompt and answer so far
    new: int = 0  # answer tokens so far
    place: int = 0  # its place while it waits for room in the batch (0: not told it waits)
    positions: int | None = None  # the KV positions it needs: its prompt and its new tokens (counted once)
    rope_delta: int = 0  # M-RoPE (Qwen-VL): its answer's rotary positions are its indices plus this

    @property
    def out(self) -> queue.Queue:
        return self.streamer.text_queue

    def gone(self) -> bool:
        return self.request.cancel.is_set() or self.abandoned.is_set()


class Sampler:
    """A sequence's choice of its next token, as ``generate`` would make it: the model's ``generation_config``
    merged with the request's settings (theirs first), and the logits processors and warpers ``generate`` builds
    from that (repetition penalty, suppressed and bad words, no-repeat n-grams, a minimum answer length, ...,
    then temperature, top-k, top-p), followed by the request's own processors; then greedy or sampled with the
    sequence's own generator."""

    def __init__(self, kwargs: dict[str, Any], seed: int | None, device, model, prompt_ids):
        import copy

        import torch
        from transformers import LogitsProcessorList

        settings = {k: v for k, v in kwargs.items() if k != "logits_processor"}
        config, _ = model._prepare_generation_config(None, **settings)
        config = copy.deepcopy(config)  # _prepare_special_tokens writes tensors into it
        model._prepare_special_tokens(config, True, device=device, batch_size=1)
        prompt = torch.as_tensor(prompt_ids, device=device).view(1, -1)
        self.processors = model._get_logits_processor(
            generation_config=config, input_ids_seq_length=prompt.shape[1], encoder_input_ids=prompt,
            logits_processor=kwargs.get("logits_processor") or LogitsProcessorList(), device=device, model_kwargs={})
        self.sample = bool(config.do_sample)
        if self.sample:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(seed if seed is not None else random.getrandbits(63))

    @property
    def plain_greedy(self) -> bool:
        """Greedy with no logits processor: the token is the raw logits' argmax (taken for the whole step at once)."""
        return not self.sample and not self.processors

    def choose(self, logits, ids: list[int]) -> int:
        """The next token for one sequence from its raw logits (1-D) and its ids so far (prompt and answer)."""
        import torch

        scores = logits[None].float()
        if self.processors:
            scores = self.processors(torch.as_tensor([ids], device=scores.device), scores)
        if not self.sample:
            return int(scores.argmax(-1))
        return int(torch.multinomial(torch.softmax(scores, -1), 1, generator=self.generator))


class Scheduler:
    """The batching loop in its own thread; ``submit`` hands it a ``Job`` (see the module docstring)."""

    def __init__(self, engine, max_batch: int, kv_budget_bytes: int):
        import torch

        self.engine, self.max_batch, self.kv_budget = engine, max(1, int(max_batch)), int(kv_budget_bytes)
        model = engine.model
        text = model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.kv = BatchKV(text.num_hidden_layers, text.num_key_value_heads, head_dim, model.dtype, engine.device)
        eos = model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        self.limit = self.chunk = self.max_batch  # lowered after an out-of-memory, until the batch empties
        self.running: list[Job] = []  # row i of the KV buffer is running[i]
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closed = False
        self._masks: dict[int, Any] = {}
        self._torch = torch
        #: diagnostics: decode steps run, the most sequences decoded together, the most KV bytes held at once
        #: (the batch's buffer and the prefixes kept between turns)
        self.steps = self.peak_rows = self.peak_bytes = 0
        self._thread: threading.Thread | None = None  # exists only while there is work

    # ----- from the consumers' threads --------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise EngineError("The model was unloaded; ask again.")
            self._pending.append(job)
            if self._thread is None:  # the loop ends when idle and starts again with the next request
                self._thread = threading.Thread(target=self._run, name="llava-generate", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        self._wake.set()

    def wake(self) -> None:
        """A consumer stopped or went away: the loop looks at once (a test delay is cut short)."""
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    def settle(self, timeout: float = 1.0) -> None:
        """After a sequence left: when nothing else waits or runs, let the loop's thread end (it is ending)."""
        with self._cond:
            thread = self._thread if not (self._pending or self.running) else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def alive(self) -> bool:
        """The loop's thread runs (it ends only once no request is waiting or running)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # ----- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    break
                if not (self._pending or self.running):
                    self._thread = None
                    return
            try:
                with self._torch.inference_mode():
                    self._admit()
                    self._drop_gone()
                    if self.running:
                        self._decode()
            except BaseException as exc:  # noqa: BLE001 - a fault of the loop itself: every sequence hears of it
                log.exception("the batching loop failed")
                for job in list(reversed(self.running)):
                    self._finish(job, exc)
            delay = self.engine.stream_delay
            if delay > 0 and self.running:  # test knob: a slower model; cut short by a stop
                self._wake.wait(delay)
            self._wake.clear()
        for job in [*self.running, *self._pending]:
            self._finish(job, EngineError("The model was unloaded while answering; ask again."))
        self._pending.clear()
        with self._cond:
            self._thread = None

    def _admit(self) -> None:
        """Prefill waiting requests into free rows (as many as the batch and the KV budget allow); the
        ones left waiting hear their place."""
        while True:
            with self._cond:
                if not self._pending:
                    return
                if len(self.running) >= self.limit:
                    break
                job = self._pending.popleft()
            if job.gone():
                self._end(job)
                continue
            if self.running and not self._fits(job):
                with self._cond:
                    self._pending.appendleft(job)  # waits for a row to free
                break
            self._start(job)
        self._tell_places()

    def _fits(self, job: Job) -> bool:
        if job.positions is None:  # the prompt is tokenised once, not at every step it waits
            job.positions = self.engine.prompt_info(job.request.messages).n_tokens + job.request.params.max_new_tokens
        return self.kv.bytes_for(len(self.running) + 1, job.positions + 1) <= self.kv_budget

    def _tell_places(self) -> None:
        """Stopped requests leave the wait at once, wherever they stand; each one still waiting hears
        its place when it changed (the page shows it)."""
        with self._cond:
            gone = [job for job in self._pending if job.gone()]
            for job in gone:
                self._pending.remove(job)
            waiting = list(self._pending)
        for job in gone:
            self._end(job)
        for place, job in enumerate(waiting, 1):
            if job.place != place:
                job.place = place
                job.out.put(Queued(place))

    def _start(self, job: Job) -> None:
        """Prepare and prefill one request on its own; its first token; then it joins the batch (or is done)."""
        engine, request = self.engine, job.request
        try:
            job.prepared = engine.reuse.prepare(request.session_id, job.text, job.shas, request.new_branch)
            job.stats = engine.last_run = job.prepared.stats
            job.out.put(PromptReady(PromptInfo(text=job.text, n_images=len(job.shas), image_labels=job.labels,
                                               n_tokens=job.stats.prompt_tokens,
                                               n_image_tokens=job.stats.image_tokens)))
            job.sampler = Sampler(job.kwargs, request.params.seed, engine.device, engine.model,
                                  job.prepared.input_ids[0])
            out = engine.model.generate(**job.prepared.generate_kwargs, max_new_tokens=1, do_sample=False,
                                        temperature=None, top_p=None, top_k=None, return_dict_in_generate=True,
                                        output_logits=True)
            cache, logits = out.past_key_values, out.logits[0][0]
            job.ids = job.prepared.input_ids[0].tolist()
            job.rope_delta = job.prepared.rope_delta
            del out
            if self._emit(job, logits) or job.gone():
                return self._finish(job, cache=cache)
            self.kv.place_like(cache)
            self.kv.reserve(len(self.running) + 1, len(job.ids) + job.kwargs["max_new_tokens"])
            self.kv.join(cache)
            self.running.append(job)
            self._sync_budget()
            self.peak_rows = max(self.peak_rows, len(self.running))
            self.peak_bytes = max(self.peak_bytes, self.kv.nbytes + engine.reuse.kv.nbytes)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._finish(job, exc)

    def _emit(self, job: Job, logits, token: int | None = None) -> bool:
        """Choose (unless ``token`` was chosen already) and stream the job's next token; True when its answer
        is complete."""
        if token is None:
            token = job.sampler.choose(logits, job.ids)
        job.ids.append(token)
        job.new += 1
        job.streamer.put(self._torch.tensor([token]))
        return token in self.eos or job.new >= job.kwargs["max_new_tokens"]

    def _drop_gone(self) -> None:
        """Stopped or abandoned sequences leave before the next step (their KV is kept)."""
        for row in reversed(range(len(self.running))):
            if self.running[row].gone():
                self._finish(self.running[row])

    def _decode(self) -> None:
        """One step for every running sequence (in chunks after an out-of-memory); who ended leaves after it."""
        rows = list(range(len(self.running)))
        chunks = [rows[i:i + self.chunk] for i in range(0, len(rows), self.chunk)]
        width = self.max_batch if self.chunk == self.max_batch else None
        ended: dict[int, BaseException | None] = {}  # row -> None (finished) or its error
        for chunk in chunks:
            ended.update(self._try_step(chunk, width))
        for row in sorted(ended, reverse=True):  # the last row moves into a leaving one: highest first
            self._finish(self.running[row], ended[row])
        self.steps += 1

    def _try_step(self, rows: list[int], width: int | None) -> dict[int, BaseException | None]:
        """One step for ``rows``; out of memory: the halves, down to one row; the rows that ended."""
        try:
            return self._step(rows, width or len(rows))
        except BaseException as exc:  # noqa: BLE001 - each sequence's consumer hears of it
            if not is_out_of_memory(exc):
                return dict.fromkeys(rows, exc)
            del exc
            release_memory()
            if len(rows) == 1:
                return {rows[0]: MemoryError("out of memory in a decode step of one sequence")}
            half = max(1, len(rows) // 2)
            self.chunk = min(self.chunk, half)
            self.limit = min(self.limit, len(self.running))
            log.warning("out of memory in a decode step of %d sequences; retrying %d at a time", len(rows), half)
            return {**self._try_step(rows[:half], None), **self._try_step(rows[half:], None)}

    def _step(self, rows: list[int], width: int) -> dict[int, BaseException | None]:
        """One forward pass over ``rows`` (padded to ``width``); each row's next token streamed."""
        torch, device = self._torch, self.engine.device
        jobs = [self.running[r] for r in rows]
        step = self.kv.begin_step(rows)
        ids = torch.zeros((width, 1), dtype=torch.long)
        pos = torch.zeros((width, 1), dtype=torch.long)
        ids[:len(rows), 0] = torch.as_tensor([j.ids[-1] for j in jobs])
        pos[:len(rows), 0] = torch.as_tensor([n - 1 + job.rope_delta for n, job in zip(step.lengths, jobs,
                                                                                          strict=True)])
        out = self.engine.model(input_ids=ids.to(device), position_ids=pos.to(device), attention_mask=self._mask(width),
                                past_key_values=self.kv, use_cache=True, logits_to_keep=1, batch_rows=step)
        self.kv.end_step()
        logits = out.logits[:len(rows), -1]
        # One argmax over the rows for every plain greedy sequence (an argmax over 152,000 words is a
        # parallel reduction: one per step, not one per row); it picks the same index a row's own would.
        greedy = [job.sampler.plain_greedy for job in jobs]
        best = logits.argmax(-1).tolist() if any(greedy) else []
        ended: dict[int, BaseException | None] = {}
        for i, (row, job, row_logits) in enumerate(zip(rows, jobs, logits, strict=False)):
            try:
                if self._emit(job, row_logits, best[i] if greedy[i] else None):
                    ended[row] = None
            except BaseException as exc:  # noqa: BLE001 - this sequence's streamer failed, not the batch
                ended[row] = exc
        return ended

    def _mask(self, width: int):
        """A 4-D placeholder mask: transformers then builds none (the row-wise attention needs none)."""
        if width not in self._masks:
            self._masks[width] = self._torch.ones((width, 1, 1, 1), dtype=self._torch.bool, device=self.engine.device)
        return self._masks[width]

    # ----- leaving -------------------------------------------------------------------------------
    def _finish(self, job: Job, error: BaseException | None = None, cache=None) -> None:
        """The job leaves: its KV goes back to its session (unless it failed), its consumer hears the end."""
        engine = self.engine
        try:
            if job in self.running:
                row = self.running.index(job)
                if error is None and engine.reuse.reuse_kv and job.prepared.session_id:
                    cache = self.kv.row_cache(row, engine.reuse._new_cache())
                self.kv.leave(row)
                self.running[row] = self.running[-1]
                self.running.pop()
                if not self.running:
                    self.kv.free()
                    self.limit = self.chunk = self.max_batch
                self._sync_budget()
            if job.prepared is not None:
                job.prepared.cache = cache
                sequences = self._torch.as_tensor([job.ids]) if error is None and job.ids else None
                engine.reuse.finish(job.prepared, sequences, ok=sequences is not None)
                if sequences is not None:
                    job.stats.new_token_ids = job.ids[job.prepared.input_ids.shape[1]:]
        finally:
            job.prepared = None
            if error is not None:
                job.out.put(error)
            self._end(job)

    def _end(self, job: Job) -> None:
        try:
            job.streamer.end()  # the rest of the text, then the end of the stream
        except BaseException:  # noqa: BLE001 - the consumer still gets the end
            job.out.put(job.streamer.stop_signal)
        job.done.set()

    def _sync_budget(self) -> None:
        """Prefixes kept between turns get what the running batch leaves of the KV budget."""
        self.engine.reuse.kv.budget = max(0, self.kv_budget - self.kv.nbytes)
