"""The remote engine: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, llama.cpp, this app).

The whole conversation goes out on every turn as chat messages; each image is an
``image_url`` content part holding a PNG data URL, placed exactly where the local
engine puts it (after its "Image N:" label), so the server's chat template renders the
same prompt. Answers are streamed (server-sent events); Stop shuts the connection,
which is how OpenAI-compatible servers learn to abort a request. Only the ``openai``
client is imported here: a remote-only deployment needs neither torch nor transformers.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from typing import Any

from llava_app.engine.base import (
    Backend,
    ChatRequest,
    ContextTooLong,
    Event,
    PromptInfo,
    PromptReady,
    TextDelta,
    Usage,
    image_refs,
)
from llava_app.engine.remote_errors import cut_message, detail_of, root_cause, status_message, too_long
from llava_app.engine.remote_tokens import ServerTokens
from llava_app.engine.remote_wire import DataURLs, abort, json_body, new_mark
from llava_app.engine.tiny.presets import is_tiny
from llava_app.errors import MissingDependency, UserError
from llava_app.messages import Message

log = logging.getLogger(__name__)

#: the header that carries the conversation id (a random hex string), for sticky routing upstream
SESSION_HEADER = "X-Session-ID"
#: how long the start-up check waits for /models at most (seconds)
STARTUP_TIMEOUT = 10.0
def _import_openai():
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependency("remote.needs_openai") from exc
    return openai


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["text"] for p in parts if p["type"] == "text")


class OpenAIBackend(Backend):
    """Streams answers from an OpenAI-compatible server with the official ``openai`` client.

    Args:
        model: the model name the server serves (``--served-model-name`` in vLLM).
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        api_key: sent as a bearer token; servers without auth accept any.
        timeout: seconds to wait for a connection, or for the next part of an answer.
        client: an ``openai.OpenAI``-like object to use instead (tests pass their own).
        check: ask the server for its models now, so a wrong URL, key or model fails at start-up.
        max_concurrency: answers streamed at once; the server batches them, the page queues the rest.
        context_length: the model's window in tokens; None takes what the server reports (vLLM's
            ``max_model_len``, llama.cpp's ``n_ctx``); given, it also caps what the server reports.
        http: an ``httpx.Client``-like object for the server's own endpoints (``/props``, ``/tokenize``,
            ``/apply-template``); None makes one, unless ``client`` was given (then counts are estimates).

    Example:
        >>> backend = OpenAIBackend("llava-hf/llava-interleave-qwen-0.5b-hf", "http://gpu:8000/v1")  # doctest: +SKIP
        >>> demo = build_demo(backend, config)  # doctest: +SKIP
    """

    def __init__(self, model: str, base_url: str, api_key: str = "", *, timeout: float = 120.0, client: Any = None,
                 check: bool = True, max_concurrency: int = 16, context_length: int | None = None,
                 http: Any = None):
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.is_random = is_tiny(model)
        self.max_concurrency = max_concurrency
        self.context_length = self._operator_window = context_length
        self._openai = _import_openai()
        if http is None and client is None:
            import httpx  # the openai client's own HTTP library

            http = httpx.Client()
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        #: the window and token counts the server offers (remote_tokens.py)
        self.tokens = ServerTokens(root, model, api_key, http=http)
        if client is None:
            # No retries: a failed answer is reported at once and the user can simply send again.
            client = self._openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY", max_retries=0,
                                         timeout=self._openai.Timeout(timeout, connect=min(timeout, 10.0)))
        self.client = client
        #: each picture's data URL, made once (a conversation sends every picture again on every turn)
        self.data_urls = DataURLs()
        #: the request body is made here (remote_wire.py); False: by the client (a caller's own client; the benchmark)
        self.prebuilt_body = isinstance(client, self._openai.OpenAI)
        # openai 1.x takes a raw body as ``body``; later versions as ``content`` (``body`` bytes deprecated)
        post = getattr(self.client, "post", None)
        self._body_arg = "content" if post and "content" in inspect.signature(post).parameters else "body"
        self._stream_usage = True  # ask for token counts in the stream until a server refuses the option
        if check:
            self.check()

    # ----- start-up -------------------------------------------------------------------------
    def check(self) -> None:
        """Ask the server which models it serves; raise one clear ``UserError`` when it cannot be used."""
        try:
            page = self.client.models.list(timeout=min(self.timeout, STARTUP_TIMEOUT))
            models = list(page.data)
        except self._openai.NotFoundError:
            raise UserError("remote.no_models", url=self.base_url) from None
        except self._openai.OpenAIError as exc:
            raise self.describe(exc, startup=True) from None
        ids = [m.id for m in models]
        if ids and self.model_name not in ids:
            raise UserError("remote.not_served", url=self.base_url, model=self.model_name,
                            served=", ".join(map(repr, ids)))
        served = next((m for m in models if m.id == self.model_name), None)
        self.tokens.discover(served)
        windows = [w for w in (self._operator_window, self.tokens.window) if w]
        self.context_length = min(windows) if windows else None
        log.info("using %s at %s (context %s; tokens counted %s)", self.model_name, self.base_url,
                 self.context_length or "unknown", f"by {self.tokens.kind}" if self.tokens.kind else "by estimate")

    # ----- counting -------------------------------------------------------------------------
    counts_tokens = True  # exactly where the server counts (remote_tokens.py), else by a conservative estimate

    @property
    def estimates_tokens(self) -> bool:  # type: ignore[override]
        """Counts are estimates until the server counts text and has shown what a picture costs."""
        return not (self.tokens.exact_text and self.tokens.image_tokens is not None)

    def _count(self, messages: list[dict[str, Any]]) -> tuple[int, int, bool]:
        """The prompt's tokens, its pictures' part, and whether the count is exact."""
        text, exact = self.tokens.count_text(messages)
        n_images = len(image_refs(messages))
        images = n_images * self.tokens.picture_cost()
        return text + images, images, exact and (not n_images or self.tokens.image_tokens is not None)

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._count(messages)[0]

    # ----- the request ----------------------------------------------------------------------
    def to_openai(self, messages: list[dict[str, Any]], mark: str | None = None,
                  pictures: list[bytes] | None = None) -> list[dict[str, Any]]:
        """Chat-template messages (``Conversation.messages()``) as OpenAI chat messages.

        User messages keep their parts in order ("Image N:" label, image, ..., question),
        each image becoming an ``image_url`` part with a PNG data URL (with ``mark``: the
        placeholder ``f"{mark}{i}"`` for the i-th, its data URL appended to ``pictures``); system
        and assistant messages are plain strings, which every server accepts.
        """
        keep = frozenset(ref.sha256 for ref in image_refs(messages))
        out: list[dict[str, Any]] = []
        pictures = [] if pictures is None else pictures
        for m in messages:
            if m["role"] != "user":
                out.append({"role": m["role"], "content": _text(m["content"])})
                continue
            parts = []
            for p in m["content"]:
                if p["type"] == "image":
                    pictures.append(self.data_urls.get(p["ref"].sha256, p["ref"].path, keep))
                    url = f"{mark}{len(pictures) - 1}" if mark else pictures[-1].decode("ascii")
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append({"type": "text", "text": p["text"]})
            out.append({"role": "user", "content": parts})
        return out

    def request_kwargs(self, request: ChatRequest, mark: str | None = None,
                       pictures: list[bytes] | None = None) -> dict[str, Any]:
        """``chat.completions.create`` arguments: the messages and the sampling parameters (``mark``: see
        ``to_openai``)."""
        p = request.params
        max_tokens = int(p.max_new_tokens)
        if self.context_length:
            prompt, _, exact = self._count(request.messages)
            if exact:  # never ask for more than the window leaves (an estimate could cut answers short)
                max_tokens = max(1, min(max_tokens, int(self.context_length) - prompt))
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": self.to_openai(request.messages, mark, pictures),
            "stream": True,
            "temperature": float(p.temperature),  # 0 is greedy on OpenAI-compatible servers
            "top_p": float(p.top_p),
            "max_tokens": max_tokens,
        }
        if p.seed is not None:  # vLLM, SGLang and TGI seed their sampler with it (OpenAI: best effort)
            kwargs["seed"] = int(p.seed)
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if request.session_id:
            # Lets a load balancer keep a conversation on one engine replica, where its prefix is cached.
            kwargs["extra_headers"] = {SESSION_HEADER: request.session_id}
        return kwargs

    def prompt_info(self, messages: list[dict[str, Any]]) -> PromptInfo:
        """The prompt as the server's template renders it where the server can say (llama.cpp), else the
        messages sent as the app reads them (``source`` says which); its tokens, counted or estimated."""
        text, source = self.tokens.render(messages), "server"
        if text is None:
            lines = []
            for m in messages:
                body = " ".join("<image>" if p["type"] == "image" else p["text"] for p in m["content"])
                lines.append(f"[{m['role']}] {body}")
            text, source = "\n".join(lines), "app"
        labels = [p["ref"].label for m in messages for p in m["content"] if p["type"] == "image"]
        tokens, images, exact = self._count(messages)
        return PromptInfo(text=text, n_images=len(labels), n_tokens=tokens, image_labels=labels,
                          n_image_tokens=images, estimated=not exact, source=source)

    # ----- streaming ------------------------------------------------------------------------
    def _create(self, request: ChatRequest):
        """Start the answer: ``chat.completions.create``, its body made here with the openai client itself
        (each picture's data URL put in as the JSON bytes it already is; see remote_wire.py)."""
        if not self.prebuilt_body:
            return self.client.chat.completions.create(**self.request_kwargs(request))
        mark, pictures = new_mark(), []
        kwargs = self.request_kwargs(request, mark, pictures)
        headers = kwargs.pop("extra_headers", None) or {}
        body = json_body(kwargs, pictures, mark)
        chunk = self._openai.types.chat.ChatCompletionChunk
        return self.client.post("/chat/completions", cast_to=self._openai.types.chat.ChatCompletion,
                                options={"headers": {"Content-Type": "application/json", **headers}},
                                stream=True, stream_cls=self._openai.Stream[chunk], **{self._body_arg: body})

    def _open(self, request: ChatRequest):
        try:
            return self._create(request)
        except self._openai.BadRequestError as exc:
            if self._stream_usage and "stream_options" in detail_of(exc):
                log.info("%s refuses stream_options; token counts will not be shown", self.base_url)
                self._stream_usage = False
                return self._open(request)
            sizes = too_long(exc)
            if sizes is not None:
                raise self._too_long(request, *sizes, detail=detail_of(exc)) from None
            raise self.describe(exc, request) from None
        except self._openai.OpenAIError as exc:
            raise self.describe(exc, request) from None

    def _too_long(self, request: ChatRequest, prompt: int | None, window: int | None, detail: str) -> ContextTooLong:
        """The server refused the prompt as longer than its window: learn from its count, say so."""
        if prompt:
            self.tokens.learn(request.messages, prompt)
        return ContextTooLong("remote.too_long", prompt_tokens=prompt, window=window, detail=detail)

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        if request.cancel.is_set():
            return
        info = self.prompt_info(request.messages)
        known = None if info.estimated else info.n_tokens  # the prompt's size, when it was counted exactly
        stream = self._open(request)
        yield PromptReady(info)
        finished, abort_lock = threading.Event(), threading.Lock()

        def watch() -> None:
            # Stop (or a closed tab) shuts the connection at once, even while the server is silent.
            while not finished.is_set():
                if request.cancel.wait(0.05):
                    with abort_lock:
                        if not finished.is_set():
                            abort(stream)
                    return

        threading.Thread(target=watch, name="llava-remote-stop", daemon=True).start()
        pieces, finish, complete, usage = 0, None, False, None
        try:
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    if choice.delta is not None and choice.delta.content:
                        pieces += 1
                        yield TextDelta(choice.delta.content)
                    finish = choice.finish_reason or finish
                if request.cancel.is_set():
                    break
            else:
                complete = True
        except (self._openai.OpenAIError, ValueError) as exc:
            if not request.cancel.is_set():  # else our own Stop closed the connection
                if pieces:  # what arrived is kept: so is what is known of how it was made
                    yield _usage(usage, pieces, "error", known)
                raise self.describe(exc, request, cut=pieces > 0) from None
        finally:
            with abort_lock:
                finished.set()
                if not complete:  # a finished response went back to the connection pool: leave it be
                    abort(stream)
        if request.cancel.is_set():
            finish = "cancelled"
        elif finish is None:
            # The connection ended cleanly but the answer never said it was done (a proxy, a dying server).
            if pieces:
                yield _usage(usage, pieces, "error", known)
            raise UserError(cut_message(Message("remote.stream_ended"), pieces > 0))
        if usage is not None and usage.prompt_tokens:
            self.tokens.learn(request.messages, int(usage.prompt_tokens))
        yield _usage(usage, pieces, finish, known)

    def close(self) -> None:
        """Close the connections to the server."""
        self.data_urls.clear()
        for closable in (self.tokens.http, self.client):
            close = getattr(closable, "close", None)
            if callable(close):
                close()

    # ----- errors ---------------------------------------------------------------------------
    def describe(self, exc: Exception, request: ChatRequest | None = None, cut: bool = False,
                 startup: bool = False) -> UserError:
        """A message a user can act on for any failure talking to the server (``cut``: mid-answer)."""
        o = self._openai
        where = self.base_url
        if isinstance(exc, o.APITimeoutError):
            msg = Message("remote.timeout", url=where, seconds=self.timeout)
        elif isinstance(exc, o.APIConnectionError):
            msg = (Message("remote.connection_lost", url=where, cause=root_cause(exc)) if cut
                   else Message("remote.unreachable", url=where, cause=root_cause(exc)))
        elif isinstance(exc, o.APIStatusError):
            msg = status_message(exc, len(image_refs(request.messages)) if request is not None else None,
                                 self.model_name)
        elif isinstance(exc, o.APIError):  # an error event inside the stream
            msg = Message("remote.reported", url=where, detail=str(exc.message))
        else:
            msg = Message("remote.unreadable", url=where, kind=type(exc).__name__)
        if cut:
            return UserError(cut_message(msg, True))
        return UserError("remote.failed_at_start" if startup else "remote.failed", reason=msg)


def _usage(usage: Any, pieces: int, finish: str, known: int | None = None) -> Usage:
    """The answer's ``Usage``: the server's counts when it sent them, else its text pieces (about one token each)
    and the prompt's size as counted before it was sent (``known``, when exact)."""
    if usage is None:
        return Usage(prompt_tokens=known, completion_tokens=pieces, finish_reason=finish)
    return Usage(prompt_tokens=usage.prompt_tokens or known, completion_tokens=usage.completion_tokens,
                 finish_reason=finish)
