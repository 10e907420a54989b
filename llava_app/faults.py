"""Running out of memory: how to recognise it, what to tell the user, how to give memory back.

CUDA reports ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), CPU runs raise
``MemoryError``, and some kernels raise a plain ``RuntimeError`` whose text says
"out of memory". All of them become one ``UserError`` the user can act on. Memory is
released only once nothing refers to the failed step any more: the exception's
traceback holds the frames of ``generate`` and with them every activation tensor, so
it is cleared before collecting.
"""

from __future__ import annotations

import functools
import gc
import sys

from llava_app.errors import UserError
from llava_app.messages import Message

OUT_OF_MEMORY_MESSAGE = Message("engine.out_of_memory")


class OutOfMemory(UserError):
    """The request did not fit in memory; the conversation is unchanged."""

    def __init__(self, message: Message | str = OUT_OF_MEMORY_MESSAGE):
        super().__init__(message)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors, whatever library raised them."""
    if isinstance(exc, (MemoryError, OutOfMemory)):
        return True
    if "OutOfMemory" in type(exc).__name__:
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def drop_traceback(exc: BaseException) -> None:
    """Let go of the frames (and tensors) an exception and its causes hold."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # a frame still executing cannot be cleared
                pass
            tb = tb.tb_next
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def release_memory() -> None:
    """Collect garbage and hand cached GPU memory back (without importing torch where it is not loaded)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def out_of_memory_error(exc: BaseException) -> OutOfMemory | None:
    """For an out-of-memory fault: drop the frames it holds, release the memory, and return the user's error.

    None for any other exception. Callers raise the result ``from None``, so nothing keeps
    the failed step's tensors alive while the user reads the message.
    """
    if not is_out_of_memory(exc):
        return None
    drop_traceback(exc)
    release_memory()
    return OutOfMemory()


def traceback_only(exc: BaseException) -> BaseException:
    """What to log of an unexpected exception: a stand-in with its type's name, its traceback and its chain
    of causes, but none of the messages (``log.error(..., exc_info=traceback_only(exc))``).

    Logs never carry what users wrote, and an error raised deep in a tokenizer or a model may quote the
    prompt; where it was raised, and through which calls, is what finding the fault takes.
    """
    stand_ins: dict[int, BaseException] = {}

    def stand_in(error: BaseException | None) -> BaseException | None:
        if error is None:
            return None
        if id(error) not in stand_ins:  # (a chain may loop)
            copy = stand_ins[id(error)] = _withheld(type(error))()
            copy.__traceback__ = error.__traceback__
            copy.__cause__, copy.__context__ = stand_in(error.__cause__), stand_in(error.__context__)
            copy.__suppress_context__ = error.__suppress_context__
        return stand_ins[id(error)]

    return stand_in(exc)


@functools.cache
def _withheld(cls: type[BaseException]) -> type[Exception]:
    """An exception class named and placed as ``cls`` whose instances say their message was withheld."""
    return type(cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                             "__str__": lambda self: "(message withheld from the log)"})
