"""What an OpenAI-compatible server tells about its window and its tokens (``remote.py``'s context fitting).

- **The window.** vLLM (and this app's own /v1) report ``max_model_len`` in /v1/models. llama.cpp's
  ``/props`` gives ``default_generation_settings.n_ctx``, the window one request gets (``-c`` shared
  by the ``-np`` slots), as does its /v1/models ``meta.n_ctx``; ``meta.n_ctx_train``, the model's
  training length, only when nothing else is said. SGLang reports ``max_model_len`` as vLLM does; TGI
  its ``max_total_tokens`` (prompt and answer together) in ``/info``. The operator's ``--context-length``
  is used when the server says nothing, and caps what it says.
- **Exact text counts.** llama.cpp renders the prompt with its own template (``/apply-template``,
  each picture a media marker) and counts the text between the markers with ``/tokenize``, as it
  does itself before encoding the pictures; vLLM counts chat messages with its ``/tokenize``.
- **Pictures.** No server counts a picture before it encodes it, so each picture is taken to cost
  ``IMAGE_TOKENS`` until the server's own count of a prompt (the usage of an answer, or the size in
  a refusal) shows what one costs with this model: that count less the text's. From then on that
  figure is used (the largest seen, when pictures of several sizes cost differently).
- **Without such endpoints** (this app's own /v1, for one) text is estimated, conservatively:
  ``BYTES_PER_TOKEN`` bytes of UTF-8 a token (an English word of 5-6 bytes is 1-2 tokens, a Chinese
  character 3 bytes and 1-2 tokens) and ``MESSAGE_TOKENS`` a message for the template's role tags.

A count is exact only when the text was counted by the server and the pictures' cost was learned
from it (or there are none); otherwise it is an estimate: context fitting drops turns on it but
never refuses a question on it alone, and a prompt the server still finds too long is refused by
it, dropped further and asked again (``ContextTooLong``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

#: what a picture is taken to cost until the server shows it (LLaVA-1.5 576, LLaVA-Interleave 729,
#: a LLaVA-NeXT picture up to 2,928): deliberately more than the common single-tile models
IMAGE_TOKENS = 1024
#: the text estimate without a tokenize endpoint: a token per this many bytes of UTF-8
BYTES_PER_TOKEN = 2
#: and this many tokens a message (role tags, separators) plus the generation prompt
MESSAGE_TOKENS = 8
#: llama.cpp's media marker (``mtmd_default_marker()``) where its /props names none: a picture's place in its prompt
LLAMA_MARKER = "<__media__>"
#: how long a probe or a count may take (seconds); a server that does not answer is counted by estimate
PROBE_TIMEOUT = 5.0
#: counts remembered (a conversation's prompt is counted several times per turn while fitting)
_KEPT = 512


def estimate_text(messages: list[dict[str, Any]]) -> int:
    """The conservative estimate of a prompt's text tokens (pictures not included)."""
    total = MESSAGE_TOKENS
    for m in messages:
        total += MESSAGE_TOKENS
        for p in m["content"]:
            if p["type"] == "text":
                total += math.ceil(len(p["text"].encode("utf-8")) / BYTES_PER_TOKEN)
    return total


def text_messages(messages: list[dict[str, Any]], marker: str | None) -> list[dict[str, Any]]:
    """Chat-template messages as OpenAI text messages without pictures.

    With a ``marker`` (llama.cpp) each message is one string, each picture the marker, the parts
    joined with nothing between them, as llama.cpp joins a message with pictures; without one
    (vLLM) a user message keeps its text parts and its pictures are left out.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if marker is not None or m["role"] != "user":
            text = "".join(p["text"] if p["type"] == "text" else (marker or "") for p in m["content"])
            out.append({"role": m["role"], "content": text})
        else:
            out.append({"role": "user", "content": [{"type": "text", "text": p["text"]}
                                                    for p in m["content"] if p["type"] == "text"]})
    return out


class ServerTokens:
    """The window and token counts one server offers (see the module docstring).

    Args:
        root: the server's root URL (the API root without ``/v1``).
        model: the model name, as the server serves it.
        api_key: sent as a bearer token.
        http: an ``httpx.Client``-like object; None counts by estimate only (no server to ask).
    """

    def __init__(self, root: str, model: str, api_key: str = "", http: Any = None):
        self.root = root.rstrip("/")
        self.model = model
        self.http = http
        self.headers = {"Authorization": f"Bearer {api_key or 'EMPTY'}"}
        #: "llama.cpp" (/apply-template + /tokenize), "vllm" (/tokenize of chat messages) or "" (estimates)
        self.kind = ""
        #: llama.cpp's media marker (random per server in recent versions: its /props says which)
        self.marker = LLAMA_MARKER
        #: the window the server reported (None: it did not say)
        self.window: int | None = None
        #: what one picture costs, learned from the server's own counts (None: not yet shown)
        self.image_tokens: int | None = None
        self._counts: OrderedDict[str, Any] = OrderedDict()  # counts and rendered prompts, by the prompt's text
        self._lock = threading.Lock()

    # ----- what the server is -----------------------------------------------------------------
    def discover(self, served: Any) -> None:
        """Learn the window and the counting endpoints from the /v1/models entry and a probe or two."""
        extra = _as_dict(served)
        meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
        for window in (extra.get("max_model_len"), meta.get("n_ctx"), meta.get("n_ctx_train")):
            if isinstance(window, int) and window > 0:  # vLLM and this app's /v1; llama.cpp's model metadata
                self.window = window
                break
        if self.http is None:
            return
        props = self._get("/props")
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        if isinstance(settings, dict):
            self.kind = "llama.cpp"
            if isinstance(props.get("media_marker"), str) and props["media_marker"]:
                self.marker = props["media_marker"]
            n_ctx = settings.get("n_ctx")  # one slot's share of -c: what a request gets
            if isinstance(n_ctx, int) and n_ctx > 0:
                self.window = n_ctx
            return
        probe = self._post("/tokenize", {"model": self.model, "prompt": "hi"})
        if isinstance(probe, dict) and isinstance(probe.get("count"), int):
            self.kind = "vllm"
            if self.window is None and isinstance(probe.get("max_model_len"), int):
                self.window = probe["max_model_len"]
        if self.window is None:  # TGI: prompt and answer together may take max_total_tokens
            info = self._get("/info")
            total = info.get("max_total_tokens") if isinstance(info, dict) else None
            if isinstance(total, int) and total > 0:
                self.kind, self.window = "tgi", total

    @property
    def exact_text(self) -> bool:
        """Text is counted by the server itself."""
        return bool(self.kind)

    # ----- counting ---------------------------------------------------------------------------
    def count_text(self, messages: list[dict[str, Any]]) -> tuple[int, bool]:
        """The prompt's tokens without its pictures, and whether the server counted them."""
        if self.kind:
            counted = self._remembered("count", messages, self._count_llama if self.kind == "llama.cpp"
                                       else self._count_vllm)
            if counted is not None:
                return counted, True
        return estimate_text(messages), False

    def _remembered(self, what: str, messages: list[dict[str, Any]], compute) -> Any:
        """``compute(messages)``, remembered for the same text (a prompt is counted several times a turn)."""
        key = what + json.dumps(text_messages(messages, self.marker), sort_keys=True)
        with self._lock:
            known = self._counts.get(key)
            if known is not None:
                self._counts.move_to_end(key)
                return known
        value = compute(messages)
        if value is not None:
            with self._lock:
                self._counts[key] = value
                while len(self._counts) > _KEPT:
                    self._counts.popitem(last=False)
        return value

    def picture_cost(self) -> int:
        """What one picture is taken to cost now."""
        return self.image_tokens or IMAGE_TOKENS

    def learn(self, messages: list[dict[str, Any]], prompt_tokens: int) -> None:
        """The server counted this prompt as ``prompt_tokens``: learn what a picture costs from it."""
        n_images = sum(1 for m in messages for p in m["content"] if p["type"] == "image")
        if not n_images or prompt_tokens <= 0:
            return
        # With an estimated text (no tokenize endpoint) the figure is a little low, the text's estimate a
        # little high: their sum is still the server's count for this prompt, and a refusal corrects the rest.
        text, _ = self.count_text(messages)
        if prompt_tokens <= text:
            return
        per_image = math.ceil((prompt_tokens - text) / n_images)
        if self.image_tokens is None or per_image > self.image_tokens:
            log.info("a picture costs %d tokens on %s (was %s)", per_image, self.root, self.image_tokens or "unknown")
            self.image_tokens = per_image

    def render(self, messages: list[dict[str, Any]]) -> str | None:
        """The prompt exactly as the server's own template renders it (llama.cpp only), pictures as ``<image>``."""
        if self.kind != "llama.cpp":
            return None
        prompt = self._apply_template(messages)
        return None if prompt is None else prompt.replace(self.marker, "<image>")

    def _apply_template(self, messages: list[dict[str, Any]]) -> str | None:
        return self._remembered("prompt", messages, self._ask_template)

    def _ask_template(self, messages: list[dict[str, Any]]) -> str | None:
        reply = self._post("/apply-template", {"messages": text_messages(messages, self.marker)})
        prompt = reply.get("prompt") if isinstance(reply, dict) else None
        return prompt if isinstance(prompt, str) else None

    def _count_llama(self, messages: list[dict[str, Any]]) -> int | None:
        """llama.cpp: the rendered prompt's text between the pictures, tokenised as the server does it
        (the first piece with the model's BOS, special tokens parsed)."""
        prompt = self._apply_template(messages)
        if prompt is None:
            return None
        total = 0
        for i, piece in enumerate(prompt.split(self.marker)):
            if not piece and i:
                continue
            reply = self._post("/tokenize", {"content": piece, "add_special": i == 0, "parse_special": True})
            tokens = reply.get("tokens") if isinstance(reply, dict) else None
            if not isinstance(tokens, list):
                return None
            total += len(tokens)
        return total

    def _count_vllm(self, messages: list[dict[str, Any]]) -> int | None:
        """vLLM: its /tokenize renders chat messages with the model's template and counts them."""
        reply = self._post("/tokenize", {"model": self.model, "messages": text_messages(messages, None),
                                         "add_generation_prompt": True})
        count = reply.get("count") if isinstance(reply, dict) else None
        return count if isinstance(count, int) else None

    # ----- HTTP -------------------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """The JSON reply, or None when the server has no such endpoint or fails (counting falls back)."""
        try:
            reply = self.http.request(method, self.root + path, json=body, headers=self.headers,
                                      timeout=PROBE_TIMEOUT)
            if reply.status_code != 200 or "json" not in reply.headers.get("content-type", ""):
                return None
            return reply.json()
        except Exception as exc:  # noqa: BLE001 - any failure means: count by estimate this time
            log.debug("%s %s%s failed: %s", method, self.root, path, exc)
            return None


def _as_dict(served: Any) -> dict[str, Any]:
    """A /v1/models entry's fields, extra ones included (the openai client keeps them as attributes)."""
    if served is None:
        return {}
    if isinstance(served, dict):
        return served
    dump = getattr(served, "model_dump", None)
    data = dump() if callable(dump) else dict(getattr(served, "__dict__", {}))
    return data if isinstance(data, dict) else {}
