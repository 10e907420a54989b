"""What an OpenAI-compatible server's failures mean, in words a person can act on (used by ``remote.py``)."""

from __future__ import annotations

import re
from typing import Any

from llava_app.messages import Message

# vLLM: "At most 6 image(s) may be provided in one prompt." (older: "... in one request.")
_IMAGE_LIMIT = re.compile(r"At most (\d+) image\(s\) may be provided", re.IGNORECASE)
# vLLM 0.7-0.8: "You set image=2 (or defaulted to 1) in `--limit-mm-per-prompt`, but passed 3 image items ..."
_IMAGE_LIMIT_OLD = re.compile(r"image=(\d+)\D.*limit-mm-per-prompt", re.IGNORECASE)
# A prompt longer than the window: llama.cpp ("the request exceeds the available context size"; type
# exceed_context_size_error), vLLM ("This model's maximum context length is 4096 tokens ..."), SGLang ("... is
# longer than the model's context length ..."), TGI ("`inputs` tokens + `max_new_tokens` must be <= 4096")
_TOO_LONG = re.compile(r"exceeds? the available context size|exceed_context_size|maximum context length"
                       r"|longer than the (?:model's )?(?:context length|maximum model length)|context_length_exceeded"
                       r"|`inputs` tokens", re.IGNORECASE)
# the prompt's size in such a refusal: vLLM "(3000 in the messages" / "your request has 3000 input tokens",
# SGLang "The input (5000 tokens)", TGI "Given: 4000 `inputs` tokens"
_PROMPT_SIZE = re.compile(r"(\d+) in the messages|has (\d+) input tokens|input \((\d+) tokens\)"
                          r"|Given: (\d+) `inputs` tokens", re.IGNORECASE)


def status_message(exc: Any, n_images: int | None, model: str) -> Message:
    """The message for an HTTP error reply (``n_images``: the conversation's pictures, when known)."""
    status, detail = exc.status_code, detail_of(exc)
    if status == 400:
        limit = _IMAGE_LIMIT.search(detail) or _IMAGE_LIMIT_OLD.search(detail)
        if limit:
            has = Message("remote.image_limit_has", count=n_images) if n_images is not None else ""
            return Message("remote.image_limit", limit=limit.group(1), has=has)
        return Message("remote.refused", detail=detail)
    if status in (401, 403):
        return Message("remote.api_key", status=status)
    if status == 404:
        return Message("remote.unknown_model", model=model, detail=detail)
    if status == 413:
        return Message("remote.too_large")
    if status == 429:
        return Message("remote.busy")
    if status >= 500:
        return Message("remote.server_failed", status=status, detail=detail)
    return Message("remote.status", status=status, detail=detail)


def too_long(exc: Any) -> tuple[int | None, int | None] | None:
    """For a refusal of a prompt longer than the window: the server's (prompt tokens, window), each None
    when it did not say; None for any other refusal."""
    body, detail = body_of(exc), detail_of(exc)
    if not (_TOO_LONG.search(detail) or _TOO_LONG.search(str(body.get("type", "")))):
        return None
    size = _PROMPT_SIZE.search(detail)
    prompt = body.get("n_prompt_tokens") if isinstance(body.get("n_prompt_tokens"), int) else (
        int(next(g for g in size.groups() if g)) if size else None)
    return prompt, (body.get("n_ctx") if isinstance(body.get("n_ctx"), int) else None)


def cut_message(reason: Message, kept: bool) -> Message:
    return Message("remote.cut_kept" if kept else "remote.cut", reason=reason)


def body_of(exc: Any) -> dict[str, Any]:
    """The error object of a server's error reply (``{"error": {...}}`` or vLLM's flat one)."""
    body = getattr(exc, "body", None)
    if not isinstance(body, dict):
        return {}
    return body["error"] if isinstance(body.get("error"), dict) else body


def detail_of(exc: Any) -> str:
    """The server's own error message, short."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or inner.get("detail") or body.get("detail")
    if not message:
        response = getattr(exc, "response", None)
        try:
            message = response.text if response is not None else None
        except Exception:  # noqa: BLE001 - a streamed body that was never read
            message = None
    message = " ".join(str(message or getattr(exc, "message", "") or type(exc).__name__).split())
    return message if len(message) <= 300 else message[:297] + "..."


def root_cause(exc: BaseException) -> str:
    """The innermost cause's message ('Connection refused', 'peer closed connection ...')."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)
