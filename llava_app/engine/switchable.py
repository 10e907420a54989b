"""A backend holder whose engine can be swapped for another model while the app runs.

Conversations are plain data, so a switch keeps them as they are: the next answer
builds its prompt from the conversation again and the new engine encodes the images
itself. One engine is held at a time: the old one is closed (its memory freed) before
the new one loads, so a GPU that fits one 7B model is enough.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llava_app.engine.base import Backend, ChatRequest, Event, PromptInfo
from llava_app.errors import UserError
from llava_app.messages import Message

log = logging.getLogger(__name__)

Report = Callable[[float, Message], None]


class SwitchableBackend(Backend):
    """Implements ``Backend`` by delegating to the engine it currently holds (and nothing more:
    code that needs the engine's own parts reads ``engine``).

    ``switch`` waits for the answers being written to finish (new ones wait for the
    switch), closes the current engine, loads the new one with ``factory``, and on a
    failure loads the previous model again, so the server is never left without one
    when it can be helped.
    """

    can_switch = True

    def __init__(self, engine: Backend, factory: Callable[[str], Backend]):
        self._engine: Backend | None = engine
        self._factory = factory
        self._cond = threading.Condition()
        self._in_use = 0
        self._switching = False
        self._last_name = engine.model_name

    # ----- what the page shows follows the held engine ----------------------------------
    @property
    def model_name(self) -> str:  # type: ignore[override]
        return self._engine.model_name if self._engine is not None else self._last_name

    @property
    def is_random(self) -> bool:  # type: ignore[override]
        return self._engine.is_random if self._engine is not None else False

    @property
    def supports_images(self) -> bool:  # type: ignore[override]
        return self._engine.supports_images if self._engine is not None else True

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        return self._engine.context_length if self._engine is not None else None

    @property
    def counts_tokens(self) -> bool:  # type: ignore[override]
        return self._engine.counts_tokens if self._engine is not None else False

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        return self._engine.max_concurrency if self._engine is not None else 1

    @property
    def model_type(self) -> str:  # type: ignore[override]
        return self._engine.model_type if self._engine is not None else ""

    def image_resolution(self):
        engine = self._engine
        return engine.image_resolution() if engine is not None else None

    def picture_geometry(self):
        engine = self._engine
        return engine.picture_geometry() if engine is not None else None

    @property
    def engine(self) -> Backend | None:
        """The engine held now (None only after a failed switch whose fallback failed too)."""
        return self._engine

    @property
    def switching(self) -> bool:
        """True while a model is being swapped."""
        return self._switching

    # ----- the Backend interface ---------------------------------------------------------
    @contextmanager
    def _use(self) -> Iterator[Backend]:
        """The held engine, kept from being swapped until the block ends."""
        with self._cond:
            self._cond.wait_for(lambda: not self._switching)
            if self._engine is None:
                raise UserError("switch.none_loaded")
            self._in_use += 1
            engine = self._engine
        try:
            yield engine
        finally:
            with self._cond:
                self._in_use -= 1
                self._cond.notify_all()

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        with self._use() as engine:
            yield from engine.stream(request)

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        with self._use() as engine:
            return engine.count_tokens(messages)

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        with self._use() as engine:
            return engine.prompt_info(messages)

    def forget(self, session_id: str) -> None:
        engine = self._engine
        if engine is not None:
            engine.forget(session_id)

    def close(self) -> None:
        with self._cond:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    # ----- switching ---------------------------------------------------------------------
    def switch(self, name: str, report: Report | None = None) -> bool:
        """Load ``name`` in place of the held engine; False when it is already loaded.

        ``report(fraction, message)`` is told each step (the page shows it as progress).
        A model that fails to load raises ``UserError`` after the previous one is back.
        """
        report = report or (lambda fraction, message: None)
        with self._cond:
            if self._switching:
                raise UserError("switch.busy")
            if self._engine is not None and name == self._engine.model_name:
                return False
            self._switching = True
        try:
            with self._cond:
                if self._in_use:
                    report(0.05, Message("progress.waiting_answers", count=self._in_use))
                self._cond.wait_for(lambda: self._in_use == 0)
                old, self._engine = self._engine, None
            previous = old.model_name if old is not None else self._last_name
            if old is not None:
                report(0.1, Message("progress.freeing", name=previous))
                old.close()
                del old
                gc.collect()
            report(0.2, Message("progress.loading", name=name))
            try:
                engine = self._factory(name)
            except BaseException as exc:  # noqa: BLE001 - any load failure: bring the previous model back
                log.warning("switching to %s failed: %s", name, exc, exc_info=not isinstance(exc, UserError))
                report(0.6, Message("progress.reloading", name=name, previous=previous))
                reason = (exc.message if isinstance(exc, UserError)
                          else Message("switch.failure", kind=type(exc).__name__, detail=str(exc)))
                try:
                    self._engine = self._factory(previous)
                except BaseException as again:  # noqa: BLE001
                    log.error("reloading %s failed too: %s", previous, again,
                              exc_info=not isinstance(again, UserError))
                    raise UserError("switch.failed_twice", name=name, reason=reason, previous=previous) from exc
                raise UserError("switch.failed", name=name, reason=reason, previous=previous) from exc
            self._engine = engine
            self._last_name = engine.model_name
            report(1.0, Message("progress.loaded", name=name))
            return True
        finally:
            with self._cond:
                self._switching = False
                self._cond.notify_all()
