"""What the page and the API do with a conversation, without Gradio.

``ChatService`` takes uploads into a conversation, checks questions, edits and branches
(branches.py), streams answers from the backend into the conversation, and keeps one cancel
flag per running generation so Stop (or a closed tab) ends the model's decode loop.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from llava_app.chat import branches
from llava_app.chat.context import ContextFitter
from llava_app.chat.conversation import Conversation, PromptInfo
from llava_app.chat.line import Line
from llava_app.chat.one_off import OneOffChats
from llava_app.chat.pointing import PointedAnswers, Pointing
from llava_app.chat.regions import Ask
from llava_app.chat.runs import Runs
from llava_app.chat.sessions import Sessions
from llava_app.chat.timing import AnswerClock, count_prompt
from llava_app.chat.uploads import Intake, Progress, UploadResult
from llava_app.engine.base import Backend, GenerationParams, PromptReady, Queued, TextDelta, Usage, require
from llava_app.engine.catalog import any_model_allowed, check_allowed, choices
from llava_app.errors import UserError
from llava_app.faults import out_of_memory_error
from llava_app.messages import Joined
from llava_app.storage.images import ImageLimits, ImageStore, decode_image
from llava_app.storage.media import MediaOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """An answer waits in the engine's line; ``place`` 1 is next."""

    place: int


class ChatService(OneOffChats, PointedAnswers):
    """The app's behaviour; the UI and the API are thin layers over it (/v1's one-off conversations: one_off.py)."""

    def __init__(self, backend: Backend, store: ImageStore, *, max_images: int = 6, max_question_chars: int = 4000,
                 image_limits: ImageLimits | None = None, stream_interval: float = 0.05,
                 context: ContextFitter | None = None, max_images_per_message: int | None = None,
                 session_ttl: float = 3600.0, max_new_tokens_limit: int = 2048,
                 allowed_models: list[str] | None = None, intake: Intake | None = None,
                 queue_size: int | None = None, grounding: str = ""):
        self.backend = backend
        self.pointing = Pointing(backend, store, grounding)  # boxes in answers, regions in questions
        self.intake = intake or Intake(store)  # how videos, PDFs and URLs are read (limits; URLs at all)
        self.max_new_tokens_limit = max_new_tokens_limit  # the most new tokens a user may ask for
        #: the models users may switch to (the operator's allow-list; '*' allows any id)
        self.allowed_models = allowed_models or []
        self.store = store
        self.max_images = max_images
        #: most new images that go with one question (None: only the conversation limit)
        self.max_images_per_message = max_images_per_message
        #: live conversations; one idle this long (seconds) ends and frees what it holds
        self.sessions = Sessions(self._end_conversation, ttl_s=session_ttl, busy=lambda key: self.runs.busy(key))
        #: called with a conversation id when it ends (e.g. to stop saving it for its browser)
        self.on_release: list[Callable[[str], None]] = []
        self.max_question_chars = max_question_chars
        self.image_limits = image_limits or ImageLimits()
        #: fits each prompt into the model's context window (drops, summarises, refuses)
        self.context = context or ContextFitter(backend)
        #: answers wait here for the engine, in the order they were asked
        self.line = Line(lambda: self.backend.max_concurrency, max_waiting=queue_size)
        #: the least time between two updates pushed to the page; faster chunks are coalesced.
        #: Each update costs gradio a few ms of CPU, taken from the model on a small machine:
        #: 20 a second read smoothly and keep the app's rate near raw generate (benchmarks/stream_rate.py).
        self.stream_interval = stream_interval
        #: one cancel flag per asked-for answer (Stop works while it waits)
        self.runs = Runs(ttl_s=session_ttl)

    # ----- images -----------------------------------------------------------------------------
    def add_images(self, conv: Conversation, files: Iterable[tuple[str, str]], all_or_nothing: bool = False,
                   options: MediaOptions | None = None, progress: Progress | None = None) -> UploadResult:
        """Decode, store and attach uploaded files ``(path, display name)``; refused files are reported.

        A file is read by its content: a picture, a video (its keyframes) or a PDF (its pages).
        With ``all_or_nothing`` (the API: one request, one answer) a batch with any refused
        file attaches none of its files. ``options`` choose keyframes and pages; ``progress``
        hears ``(fraction, message)`` while a video or PDF is decoded (call this off the event loop).
        """
        return self.attach(conv, files, (), all_or_nothing, options, progress)

    def add_urls(self, conv: Conversation, urls: Iterable[str], all_or_nothing: bool = False,
                 options: MediaOptions | None = None, progress: Progress | None = None) -> UploadResult:
        """Fetch pictures, videos or PDFs from http(s) URLs (only where the operator allows) and attach them."""
        return self.attach(conv, (), urls, all_or_nothing, options, progress)

    def attach(self, conv: Conversation, files: Iterable[tuple[str, str]] = (), urls: Iterable[str] = (),
               all_or_nothing: bool = False, options: MediaOptions | None = None,
               progress: Progress | None = None) -> UploadResult:
        """Files, then URLs, as one batch (``add_images`` and ``add_urls`` in one; the API's /chat)."""
        sources = self.intake.file_sources(files, self.upload_limits()) + self.intake.url_sources(urls)
        self.sessions.touch(conv)
        before = conv.image_snapshot()
        result = self.intake.attach(conv, sources, lambda: self._room(conv), self.upload_limits(), self.max_images,
                                    options, progress)
        if all_or_nothing and result.errors and result.added:
            conv.restore_images(before)
            result.added = []
        if result.added:
            result.warnings += self.context_warnings(conv)
        return result

    def _room(self, conv: Conversation) -> int:
        """How many more images may join now (at least 1: a full conversation refuses with its own message)."""
        require(self.backend, "supports_images")
        self._check_per_message(conv)
        room = max(1, self.max_images - len(conv.images))
        if self.max_images_per_message is not None:
            room = min(room, self.max_images_per_message - len(conv.pending_images))
        return room

    def _check_per_message(self, conv: Conversation) -> None:
        limit = self.max_images_per_message
        if limit is not None and len(conv.pending_images) >= limit:
            raise UserError("chat.too_many_new", limit=limit, waiting=len(conv.pending_images))

    def decode_image(self, data: bytes, name: str):
        """Bytes sent by a client as a picture, decoded as uploads are (format, size and pixel limits)."""
        return decode_image(data, self.upload_limits(), name)

    def upload_limits(self) -> ImageLimits:
        """The upload limits, storing no more pixels than the current model's processor uses."""
        if self.image_limits.model_size is not None:
            return self.image_limits
        return dataclasses.replace(self.image_limits, model_size=self.backend.image_resolution())

    def context_warnings(self, conv: Conversation) -> list:
        """Warnings about the context window (images that leave no room); counting them warms the meter."""
        with conv.lock:
            conv.context_window = self.context.window
        warning = self.context.images_warning(conv)
        return [warning] if warning else []

    def remove_images(self, conv: Conversation, numbers: Iterable[int]) -> None:
        """Remove images by number (labels of the others stay)."""
        for n in numbers:
            conv.remove_image(n)

    # ----- questions and answers ----------------------------------------------------------------
    def check_question(self, text: str | None) -> str:
        """The question, stripped; empty or over-long questions are refused with a message."""
        question = (text or "").strip()
        if not question:
            raise UserError("chat.type_first")
        if len(question) > self.max_question_chars:
            raise UserError("chat.too_long", length=len(question), limit=self.max_question_chars)
        return question

    def is_running(self, conv: Conversation) -> bool:
        """True while an answer for this conversation is being generated (or waits in line)."""
        return self.runs.is_running(conv.id)

    def ask(self, conv: Conversation, text: str | None, regions: Iterable[Ask] = ()) -> None:
        """A new turn (``stream_answer`` answers it), the ``regions`` marked told after it (``Pointing.ask``)."""
        question = self.check_question(text)
        self.sessions.touch(conv)
        self._drop_orphan(conv)
        if not self.runs.settled(conv.id):
            raise UserError("chat.still_writing")
        self.pointing.ask(conv, question, list(regions))
        self._arm(conv)

    def regenerate(self, conv: Conversation) -> None:
        """A new answer to the last question (the old one stays, a sibling), armed for generation."""
        if not self.runs.settled(conv.id):
            raise UserError("chat.wait_regenerate")
        conv.regenerate()
        self._arm(conv)

    def edit(self, conv: Conversation, turn: int, text: str | None, files: Iterable[tuple[str, str]] = (),
             remove: Iterable[int] = ()) -> None:
        """Ask turn ``turn`` (0-based, on the branch shown) again, edited: new text, images added (``files``)
        or taken off it (``remove``, numbers); what followed stays on its own branch. ``stream_answer`` answers."""
        question = self.check_question(text)
        if not self.runs.settled(conv.id):
            raise UserError("chat.wait_edit")
        self._drop_orphan(conv)
        before, files = {im.number for im in conv.images}, list(files)
        errors = self.attach(conv, files, all_or_nothing=True).errors if files else []
        if errors:
            raise UserError(Joined(errors))
        branches.fork(conv, turn, question, [im.number for im in conv.images if im.number not in before], list(remove))
        self._arm(conv)

    def switch_branch(self, conv: Conversation, turn: int, index: int) -> None:
        """Show version ``index`` (0-based) of turn ``turn`` of the branch shown, and what followed it there."""
        if self.is_running(conv):
            raise UserError("chat.wait_switch")
        self._drop_orphan(conv)
        branches.switch(conv, turn, index)
        self.sessions.touch(conv)

    def undo(self, conv: Conversation) -> str:
        """Remove the last exchange; returns its question."""
        if self.is_running(conv):
            raise UserError("chat.stop_undo")
        self._drop_orphan(conv)
        return conv.undo()

    def stop(self, conv: Conversation) -> bool:
        """Ask the running generation of this conversation to stop; True when one was running."""
        return self.runs.stop(conv.id)

    def stream_answer(self, conv: Conversation, params: GenerationParams, system_prompt: str = "",
                      report_waiting: bool = False) -> Iterator[str | Waiting]:
        """Generate the pending turn's answer, yielding the growing text.

        The answer waits its turn in the engine's line first (with ``report_waiting``, a
        ``Waiting`` is yielded each time its place changes); Stop while waiting takes the
        question back. The answer is written into the conversation when the stream ends,
        however it ends (finished, stopped, abandoned by a closed tab); on an error the turn
        is taken back so the conversation stays as it was, and the error propagates.
        """
        if not conv.turns or conv.turns[-1].assistant is not None:
            return
        self.sessions.touch(conv)
        cancel = self._arm(conv, start=True)
        clock = AnswerClock()  # from joining the line: time in it is shown apart from the time to first token
        try:
            ticket, served = self.line.join(), False
        except UserError:  # the line is full: the question is taken back, with the message
            self._release(conv, cancel)
            with conv.lock:
                conv.retract()
            raise
        try:
            place = None
            while (now := self.line.wait(ticket, 0.2)) and not cancel.is_set():
                if report_waiting and now != place:
                    yield Waiting(now)
                place = now
            served = now == 0
            if not served or cancel.is_set():  # stopped (or gone) while waiting
                self._release(conv, cancel)
                with conv.lock:
                    conv.retract()
                return
            yield from self._generate(conv, params, system_prompt, cancel, report_waiting, clock.start())
        finally:
            self.line.leave(ticket, served)

    def _generate(self, conv: Conversation, params: GenerationParams, system_prompt: str,
                  cancel: threading.Event, report_waiting: bool, clock: AnswerClock) -> Iterator[str | Waiting]:
        """Fit the prompt into the window, then stream the engine's answer into the conversation."""
        try:  # drop old turns (or refuse) before generating, so the prompt fits the window
            events, first = self.context.start(conv, system_prompt, params, cancel)
        except BaseException as exc:
            self._release(conv, cancel)
            conv.retract()
            oom = out_of_memory_error(exc)
            if oom is not None:
                raise oom from None
            raise
        text, failed = "", False
        last = 0.0
        try:
            for event in itertools.chain(first, events):
                clock.see(event)
                if isinstance(event, TextDelta):
                    text += event.text
                    now = time.monotonic()
                    if now - last >= self.stream_interval:
                        last = now
                        yield text
                elif isinstance(event, Queued) and report_waiting and not text:  # past the line, no room yet
                    yield Waiting(event.place)
                elif isinstance(event, PromptReady):
                    conv.set_prompt(event.info)
                elif isinstance(event, Usage):
                    count_prompt(conv, event)
            yield text
        except BaseException as exc:
            failed = True
            oom = out_of_memory_error(exc)
            if oom is not None:
                raise oom from None
            raise
        finally:
            stopped = cancel.is_set()
            cancel.set()
            if hasattr(events, "close"):  # a generator: closing it ends the engine's work now
                events.close()
            try:  # written before the run ends: a question waiting for a stopped answer finds it in place
                with conv.lock:  # the answer is written whole, never beside a reader
                    if failed and not text:
                        conv.retract()
                    elif conv.turns and conv.turns[-1].assistant is None:
                        stats = clock.stats()
                        cut = "server" if failed and not stopped else (
                            "length" if stats is not None and stats.finish_reason == "length" else "")
                        conv.answer(text, stopped=stopped, stats=stats, cut=cut)
            finally:
                self._release(conv, cancel)

    def preview(self, conv: Conversation, system_prompt: str = "") -> PromptInfo:
        """The prompt the model was (or would be) given for the newest turn."""
        if not conv.turns:
            return PromptInfo()
        msgs = conv.messages(system_prompt)
        return self.backend.prompt_info(msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" else msgs)

    def forget(self, conv: Conversation) -> None:
        """Stop and drop whatever is held for a conversation (new chat, closed tab, a /v1 request answered)."""
        if not self.sessions.end(conv.id):
            self._end_conversation(conv.id)

    def housekeep(self) -> None:
        """End conversations idle past their time-to-live; delete image files no live conversation uses."""
        self.sessions.reap()
        grace = min(60.0, self.sessions.ttl_s)
        removed = self.store.sweep(self.sessions.images_in_use(), grace_s=grace)
        log.debug("housekeeping pass: %d live conversation(s), %d image file(s) removed", len(self.sessions), removed)
        if removed:
            log.info("removed %d image file(s) no conversation uses", removed)

    # ----- sessions: which tab or API client holds a conversation ------------------------------
    def touch(self, conv: Conversation, client: str | None = None) -> None:
        """``conv`` is in use, by browser tab or API client ``client`` when known."""
        self.sessions.touch(conv, client=client)

    def close_client(self, client: str) -> bool:
        """A tab closed: end its conversations now; False when it was already gone."""
        return self.sessions.close_client(client)

    def on_client_gone(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(client)`` once a client has no live conversation left and is gone."""
        self.sessions.on_client_gone = callback

    # ----- settings and the model ---------------------------------------------------------------
    def params(self, temperature: float | None, top_p: float | None, max_new_tokens: float | None
               ) -> GenerationParams:
        """Sampling parameters from the user's settings, clamped to what the operator allows."""
        return GenerationParams(
            temperature=max(0.0, min(2.0, float(temperature or 0.0))),
            top_p=max(0.01, min(1.0, float(top_p or 1.0))),
            max_new_tokens=max(1, min(int(self.max_new_tokens_limit), int(max_new_tokens or 1))),
        )

    def context_usage(self, conv: Conversation) -> tuple[int | None, int | None]:
        """The context window and what the conversation's images take of it, where known."""
        return self.context.window, (self.context.known_image_tokens(conv) if conv.images else None)

    @property
    def model_name(self) -> str:
        """The model that answers now."""
        return self.backend.model_name

    @property
    def max_concurrency(self) -> int:
        """How many answers the engine writes at once (the page queues the rest)."""
        return self.backend.max_concurrency

    @property
    def is_random(self) -> bool:
        """The model has random weights (a tiny test model): the page says so."""
        return self.backend.is_random

    def model_choices(self) -> tuple[list[str], bool] | None:
        """The models users may switch to and whether any id may be typed; None when switching is off."""
        if not self.backend.can_switch:
            return None
        allowed = self.allowed_models or [self.model_name]
        return choices(allowed), any_model_allowed(allowed)

    def switch_model(self, name: str, report: Callable[[float, str], None] | None = None) -> str:
        """Load an allowed model in place of the current one (conversations stay); returns its name."""
        self.backend.switch(check_allowed(name, self.allowed_models or [self.model_name]), report=report)
        return self.backend.model_name

    # ----- internals ---------------------------------------------------------------------------
    def _arm(self, conv: Conversation, start: bool = False) -> threading.Event:
        return self.runs.arm(conv.id, start)

    def _release(self, conv: Conversation, cancel: threading.Event) -> None:
        self.runs.release(conv.id, cancel)

    def _end_conversation(self, conv_id: str) -> None:
        """A conversation ended: stop its generation, drop its flag and the engine's caches for it."""
        self.runs.end(conv_id)
        self.backend.forget(conv_id)
        for hook in self.on_release:
            hook(conv_id)

    def _drop_orphan(self, conv: Conversation) -> None:
        """A question whose generation never began (the queue refused it) is taken back."""
        if self.runs.drop_unstarted(conv.id) and conv.turns and conv.turns[-1].assistant is None:
            conv.retract()
