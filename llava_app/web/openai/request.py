"""Reading a ``/v1/chat/completions`` request: checked against the OpenAI request schema, made a Conversation.

What the OpenAI schema (``CreateChatCompletionRequest``) does not allow is refused with a
400 that names the field; what it allows but this server cannot do (tools, ``n`` > 1, ...)
is refused too, saying so. Images are decoded and stored exactly as an upload is.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from llava_app.chat.conversation import MAX_TURNS, Conversation
from llava_app.chat.one_off import ClientTurn
from llava_app.chat.service import ChatService, GenerationParams
from llava_app.config import Config
from llava_app.errors import UserError

# A text part "Image N:" right before an image is that image's label (what this app's
# remote backend sends); it is taken as the image's number rather than kept as text.
_LABEL = re.compile(r"^\s*Image (\d+):\s*$")
_UNSUPPORTED = ("stop", "tools", "functions", "logprobs", "top_logprobs")  # refused unless empty
_DETAIL = ("auto", "low", "high")
#: bounds on one request's work, refused before anything else is read: a conversation holds at most
#: ``MAX_TURNS`` exchanges (two messages each), plus room for system messages
MAX_MESSAGES = 2 * MAX_TURNS + 48
MAX_PARTS = 256  # content parts in one message


class APIError(Exception):
    """A request error with its HTTP status, answered as OpenAI's ``ErrorResponse`` JSON."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}`` as the OpenAI API returns it; the HTTP status is in the status line only."""
        kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


@dataclass
class ParsedRequest:
    """A chat-completion request, checked: the conversation to answer, how, and by which model."""

    model: str
    conv: Conversation
    system_prompt: str
    params: GenerationParams
    stream: bool
    include_usage: bool


class RequestParser:
    """Checks request bodies and builds their conversations (images decoded and stored in the service's store)."""

    def __init__(self, service: ChatService, config: Config):
        self.service = service
        self.config = config

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        """Check a request body and build its conversation (images decoded and stored)."""
        served = self.service.model_name  # the model held now: a switch changes it
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "'model' is required.", param="model")
        if model != served:
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{served}`.",
                           code="model_not_found", param="model")
        params = self._params(body)
        for name in _UNSUPPORTED:
            if body.get(name):
                raise APIError(400, f"'{name}' is not supported by this server.", param=name)
        if body.get("n") not in (None, 1):
            raise APIError(400, "Only n=1 is supported.", param="n")
        response_format = body.get("response_format")
        if response_format and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
            raise APIError(400, "Only text responses are supported.", param="response_format")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise APIError(400, "'stream' must be true or false.", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise APIError(400, f"'stream_options' must be an object; got {_json_type(options)}.",
                           param="stream_options")
        include_usage = bool(options and options.get("include_usage"))
        conv, system_prompt = self._conversation(body.get("messages"))
        return ParsedRequest(served, conv, system_prompt, params, bool(stream), include_usage)

    def _params(self, body: dict[str, Any]) -> GenerationParams:
        cfg = self.config
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or cfg.max_new_tokens
        valid = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
        if not valid or not 1 <= max_tokens <= cfg.max_new_tokens_limit:
            raise APIError(400, f"'max_tokens' must be an integer from 1 to {cfg.max_new_tokens_limit}.",
                           param="max_tokens")
        temperature = _number(body, "temperature", cfg.temperature, 0.0, 2.0)
        top_p = _number(body, "top_p", cfg.top_p, 0.0, 1.0)
        if top_p <= 0.0:
            raise APIError(400, "'top_p' must be greater than 0.", param="top_p")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise APIError(400, "'seed' must be an integer.", param="seed")
        return GenerationParams(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, seed=seed)

    def _conversation(self, messages: Any) -> tuple[Conversation, str]:
        """Turns and images from OpenAI messages; the last (user) turn awaits its answer."""
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list.", param="messages")
        if len(messages) > MAX_MESSAGES:
            raise APIError(400, f"'messages' has {len(messages)} entries; this server takes at most {MAX_MESSAGES} "
                           "in one request.", code="too_many_messages", param="messages")
        system: list[str] = []
        turns: list[dict[str, Any]] = []  # {"images": [(label number or None, url)], "text": [...], "answer": str|None}
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise APIError(400, f"{where} must be an object; got {_json_type(m)}.", param=where)
            role, content = m.get("role"), m.get("content")
            if role in ("system", "developer"):
                system.append(_plain_text(content, where, required=True))
            elif role == "user":
                if not turns or turns[-1]["answer"] is not None:
                    turns.append({"images": [], "text": [], "answer": None})
                _user_parts(content, where, turns[-1])
            elif role == "assistant":
                if not turns:
                    raise APIError(400, f"{where}: an assistant message must follow a user message.", param=where)
                previous = turns[-1]["answer"]
                text = _plain_text(content, where, required=False)
                turns[-1]["answer"] = text if previous is None else previous + "\n" + text
            else:
                raise APIError(400, f"{where}.role: {role!r} is not supported (system, developer, user, assistant).",
                               param=f"{where}.role")
        if not turns or turns[-1]["answer"] is not None:
            raise APIError(400, "The last message must be the user's.", param="messages")
        if len(turns) > MAX_TURNS:
            raise APIError(400, f"The messages hold {len(turns)} questions; a conversation here holds at most "
                           f"{MAX_TURNS}.", code="too_many_messages", param="messages")
        n_images = sum(len(t["images"]) for t in turns)
        if n_images > self.config.max_images:
            # Worded as vLLM words it, so front-ends (ours included) recognise the limit.
            raise APIError(400, f"At most {self.config.max_images} image(s) may be provided in one prompt; "
                           f"this request has {n_images}.", code="too_many_images", param="messages")
        return self._build(turns), "\n\n".join(s for s in system if s.strip())

    def _build(self, turns: list[dict[str, Any]]) -> Conversation:
        """Decode every image, then let the service store them and lay the turns out as the page would."""
        k, client_turns = 0, []
        for t in turns:
            pictures = []
            for number, url in t["images"]:
                k += 1
                pictures.append((number, self._image(url, k)))
            client_turns.append(ClientTurn("\n".join(t["text"]), pictures, t["answer"]))
        return self.service.one_off_conversation(client_turns)

    def _image(self, url: str, k: int):
        """Image ``k`` of the request from a data URL (or an http(s) URL when allowed), decoded safely."""

        name = f"image {k}"
        if url.startswith("data:"):
            header, comma, payload = url[5:].partition(",")
            if not comma or not header.endswith(";base64"):
                raise APIError(400, f"{name}: data URLs must be base64, like data:image/png;base64,....",
                               code="invalid_image", param="messages")
            payload = "".join(payload.split())
            if len(payload) * 3 // 4 > self.service.image_limits.max_bytes:
                data = b"\0" * (self.service.image_limits.max_bytes + 1)  # decode_image words the size error
            else:
                try:
                    data = base64.b64decode(payload, validate=True)
                except (binascii.Error, ValueError):
                    raise APIError(400, f"{name}: the data URL is not valid base64.", code="invalid_image",
                                   param="messages") from None
        elif url.startswith(("http://", "https://")):
            if not self.config.openai_api_image_urls:
                raise APIError(400, f"{name}: this server does not fetch image URLs; send the image as a data URL "
                               "(data:image/png;base64,...), or start the server with --openai-api-image-urls.",
                               code="image_url_not_allowed", param="messages")
            data = self._fetch(url, name)
        else:
            raise APIError(400, f"{name}: only data URLs (and http(s) URLs where allowed) are accepted.",
                           code="invalid_image", param="messages")
        try:
            return self.service.decode_image(data, name)
        except UserError as exc:
            raise APIError(400, str(exc), code="invalid_image", param="messages") from None

    def _fetch(self, url: str, name: str) -> bytes:
        """Download an image URL with the app's guarded fetcher: public addresses only (or the operator's
        --image-url-allow hosts), checked at every redirect, within the upload size and a time limit."""
        from llava_app.application import url_policy
        from llava_app.chat.uploads import fetch_bytes

        try:
            return fetch_bytes(url, url_policy(self.config))
        except UserError as exc:
            raise APIError(400, f"{name}: {exc}", code="invalid_image", param="messages") from None


def _user_parts(content: Any, where: str, turn: dict[str, Any]) -> None:
    """A user message's text and images, in order, into ``turn``."""
    if isinstance(content, str):
        turn["text"].append(content)
        return
    if not isinstance(content, list) or not content:
        raise APIError(400, f"{where}.content must be a string or a non-empty array of content parts; got "
                       f"{_json_type(content)}.", param=f"{where}.content")
    _few_parts(content, where)
    label: int | None = None
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = _part_type(part, at)
        if kind == "text":
            text = _part_text(part, at)
            match = _LABEL.match(text)
            following = content[j + 1] if j + 1 < len(content) else None
            if match and isinstance(following, dict) and following.get("type") == "image_url":
                label = int(match.group(1))
            else:
                turn["text"].append(text)
        elif kind == "image_url":
            turn["images"].append((label, _part_image_url(part, at)))
            label = None
        else:
            raise APIError(400, f"{at}.type: {kind!r} is not supported (text, image_url).", param=f"{at}.type")


def _few_parts(content: list[Any], where: str) -> None:
    if len(content) > MAX_PARTS:
        raise APIError(400, f"{where}.content has {len(content)} parts; this server takes at most {MAX_PARTS} in "
                       "one message.", param=f"{where}.content")


def _part_type(part: Any, at: str) -> str:
    if not isinstance(part, dict):
        raise APIError(400, f"{at} must be an object with a 'type', like {{\"type\": \"text\", \"text\": \"...\"}}; "
                       f"got {_json_type(part)}.", param=at)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise APIError(400, f"{at}.type is missing (text or image_url).", param=f"{at}.type")
    return kind


def _part_text(part: dict[str, Any], at: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise APIError(400, f"{at}.text must be a string; got {_json_type(text)}.", param=f"{at}.text")
    return text


def _part_image_url(part: dict[str, Any], at: str) -> str:
    """The URL of an ``image_url`` part, which must be ``{"url": ..., "detail"?: ...}`` as the schema says."""
    image_url = part.get("image_url")
    if not isinstance(image_url, dict):
        raise APIError(400, f"{at}.image_url must be an object like {{\"url\": \"data:image/png;base64,...\"}}; "
                       f"got {_json_type(image_url)}.", code="invalid_image", param=f"{at}.image_url")
    url = image_url.get("url")
    if not isinstance(url, str) or not url:
        raise APIError(400, f"{at}.image_url.url must be a non-empty string (a data URL); got {_json_type(url)}.",
                       code="invalid_image", param=f"{at}.image_url.url")
    detail = image_url.get("detail")
    if detail is not None and detail not in _DETAIL:
        raise APIError(400, f"{at}.image_url.detail must be one of {', '.join(_DETAIL)}; got {detail!r}.",
                       param=f"{at}.image_url.detail")
    return url


def _plain_text(content: Any, where: str, required: bool) -> str:
    """A system or assistant message's text (a string, or a non-empty array of text parts)."""
    if content is None and not required:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise APIError(400, f"{where}.content must be a string or a non-empty array of text parts; got "
                       f"{_json_type(content)}.", param=f"{where}.content")
    _few_parts(content, where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = _part_type(part, at)
        if kind != "text":
            raise APIError(400, f"{at}.type: {kind!r} is not supported here; only user messages may carry images "
                           "(system and assistant messages take text parts).", param=f"{at}.type")
        texts.append(_part_text(part, at))
    return "".join(texts)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise APIError(400, f"'{name}' must be a number from {lo:g} to {hi:g}.", param=name)
    return float(value)


def _json_type(value: Any) -> str:
    """What a JSON value is, for error messages ("a string", "an array", ...)."""
    if value is None:
        return "null (or nothing)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)
