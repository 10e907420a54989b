"""The app's own OpenAI-compatible endpoint (--openai-api), driven by the official openai client."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from types import SimpleNamespace

import httpx
import openai
import openai_schemas
import pytest
from conftest import launched_app, make_image, serving

KEY = "sk-test-key"
MODEL = "tiny-random"


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_cache):
    from llava_app.config import Config

    config = Config(model=MODEL, device="cpu", data_dir=str(tmp_path_factory.mktemp("data")), max_new_tokens=12,
                    stream_delay=0.02, max_images=3, max_upload_mb=0.05, openai_api=True, openai_api_key=KEY,
                    openai_api_image_urls=True, image_url_allow="127.0.0.1")
    with launched_app(config) as (url, app, demo):
        url = url.rstrip("/")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        yield SimpleNamespace(url=url, app=app, demo=demo, service=app.service, backend=app.service.backend,
                              client=client, config=config)


def data_url(color, size=(64, 48), fmt="PNG") -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(make_image(color, size, fmt)).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def expected_prompt_tokens(api, turns) -> int:
    """The engine's own count for a conversation laid out as the page lays it out."""
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import decode_image

    conv = Conversation()
    for images, question, answer in turns:
        for url in images:
            stored = api.service.store.put(decode_image(base64.b64decode(url.split(",", 1)[1])))
            conv.add_image(stored.sha256, stored.path, stored.width, stored.height)
        conv.ask(question)
        if answer is not None:
            conv.answer(answer)
    return api.backend.prompt_info(conv.messages("")).n_tokens


def test_models_lists_the_served_model_and_needs_the_key(api):
    models = api.client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].max_model_len == api.backend.context_length
    wrong = openai.OpenAI(base_url=f"{api.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    bare = httpx.post(f"{api.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    openai_schemas.check("ErrorResponse", bare.json())


HEADERS = {"Authorization": f"Bearer {KEY}"}


def sse_events(response: httpx.Response) -> list:
    """The ``data:`` payloads of a server-sent event stream, parsed (``[DONE]`` kept as the string)."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def post_stream(api, body: dict) -> list:
    with httpx.stream("POST", f"{api.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return sse_events(r)


def test_responses_follow_the_official_openai_schemas(api):
    """What /v1 returns, read raw (the openai client forgives much), checked against OpenAI's own schemas."""
    assert openai_schemas.source().startswith("openai/openai-openapi openapi.json @ ")
    models = httpx.get(f"{api.url}/v1/models", headers=HEADERS).json()
    openai_schemas.check("ListModelsResponse", models)
    msgs = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [image_part(data_url("red")), {"type": "text", "text": "What is it?"}]}]
    body = {"model": MODEL, "messages": msgs, "max_tokens": 6}
    whole = httpx.post(f"{api.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=60).json()
    openai_schemas.check("CreateChatCompletionResponse", whole)
    message = whole["choices"][0]["message"]
    assert message["content"].strip() and message["refusal"] is None

    plain = post_stream(api, {**body, "stream": True})
    with_usage = post_stream(api, {**body, "stream": True, "stream_options": {"include_usage": True}})
    for events in (plain, with_usage):
        assert events[-1] == "[DONE]" and len(events) >= 4
        for chunk in events[:-1]:
            openai_schemas.check("CreateChatCompletionStreamResponse", chunk)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"]) \
            == message["content"]
    assert not any(c.get("usage") for c in plain[:-1])
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"] == whole["usage"]
    # The schema check itself can fail: the same body without "refusal" does not conform.
    del message["refusal"]
    assert openai_schemas.errors("CreateChatCompletionResponse", whole)


def test_two_images_then_a_follow_up_with_usage_counts(api):
    red, blue = data_url("red"), data_url("blue", (40, 90))
    question = "Compare Image 1 and Image 2"
    first_msgs = [{"role": "user", "content": [image_part(red), image_part(blue), {"type": "text", "text": question}]}]
    first = api.client.chat.completions.create(model=MODEL, messages=first_msgs, max_tokens=12)
    answer = first.choices[0].message.content
    assert first.object == "chat.completion" and first.model == MODEL and answer.strip()
    assert first.choices[0].message.role == "assistant" and first.choices[0].finish_reason in ("stop", "length")
    usage = first.usage
    assert usage.prompt_tokens == expected_prompt_tokens(api, [([red, blue], question, None)])
    assert usage.prompt_tokens > 2 * 16  # two images of 16 tokens each, plus the text
    # The engine's own count of the tokens it generated: the tiny model never ends early, so all 12.
    assert usage.completion_tokens == 12 and first.choices[0].finish_reason == "length"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    follow_up = first_msgs + [{"role": "assistant", "content": answer},
                              {"role": "user", "content": "Which one is brighter?"}]
    second = api.client.chat.completions.create(model=MODEL, messages=follow_up, max_tokens=8)
    assert second.choices[0].message.content.strip()
    assert second.usage.prompt_tokens == expected_prompt_tokens(
        api, [([red, blue], question, answer), ([], "Which one is brighter?", None)])
    assert second.usage.completion_tokens <= 8

    # A client that labels its images itself ("Image N:" before each, as this app's remote
    # backend does) gets the same prompt: the labels are not doubled.
    labelled = [{"role": "user", "content": [{"type": "text", "text": "Image 1:"}, image_part(red),
                                             {"type": "text", "text": "Image 2:"}, image_part(blue),
                                             {"type": "text", "text": question}]}]
    again = api.client.chat.completions.create(model=MODEL, messages=labelled, max_tokens=12)
    assert again.usage.prompt_tokens == usage.prompt_tokens
    assert again.choices[0].message.content == answer  # greedy: the same prompt gives the same answer


def test_streaming_gives_the_same_answer_piece_by_piece(api):
    msgs = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [image_part(data_url("green", (80, 80))), {"type": "text", "text": "What?"}]}]
    whole = api.client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10, temperature=0)
    stream = api.client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, "the answer did not stream"
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def _status(api, expected_error, match, **kwargs):
    kwargs.setdefault("model", MODEL)
    with pytest.raises(expected_error, match=match) as err:
        api.client.chat.completions.create(**kwargs)
    return err.value


def test_bad_requests_get_openai_style_errors(api):
    def ask(*parts, **kw):
        return dict(messages=[{"role": "user", "content": [*parts, {"type": "text", "text": "What is it?"}]}], **kw)

    err = _status(api, openai.BadRequestError, "not valid base64", **ask(image_part("data:image/png;base64,@@@")))
    assert err.status_code == 400 and err.body["code"] == "invalid_image"
    text_file = "data:image/png;base64," + base64.b64encode(b"just some text, not a picture").decode()
    _status(api, openai.BadRequestError, "image 1 is not an image this app reads", **ask(image_part(text_file)))
    four = [image_part(data_url(c)) for c in ("red", "green", "blue", "white")]
    err = _status(api, openai.BadRequestError,
                  r"At most 3 image\(s\) may be provided in one prompt; this request has 4", **ask(*four))
    assert err.body["code"] == "too_many_images"
    err = _status(api, openai.NotFoundError, "The model `llava-13b` does not exist", **ask(model="llava-13b"))
    assert err.status_code == 404 and err.body["code"] == "model_not_found" and err.body["param"] == "model"
    _status(api, openai.BadRequestError, "last message must be the user's",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    _status(api, openai.BadRequestError, "'max_tokens' must be an integer from 1 to", **ask(max_tokens=10**6))
    _status(api, openai.BadRequestError, "'temperature' must be", **ask(temperature=5))
    big = "x" * 2_000_000  # over the body limit: 3 images of 0.05 MB, base64, plus 1 MB of text
    err = _status(api, openai.APIStatusError, "larger than", messages=[{"role": "user", "content": big}])
    assert err.status_code == 413
    # The app survives all of it.
    ok = api.client.chat.completions.create(model=MODEL, max_tokens=3, **ask(image_part(data_url("red"))))
    assert ok.choices[0].message.content.strip()


def _ask(*parts, **kw) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "What?"}]}],
            **kw}


def test_every_error_body_follows_the_official_schema(api):
    """Each kind of refusal: its status, a body that is OpenAI's ErrorResponse, a string (or null) code."""
    url = f"{api.url}/v1/chat/completions"
    cases = [  # (request body, headers, status, code)
        (_ask(), {}, 401, "invalid_api_key"),
        (_ask(), {"Authorization": "Bearer wrong"}, 401, "invalid_api_key"),
        (b"{not json", HEADERS, 400, None),
        (b"[1, 2]", HEADERS, 400, None),
        (_ask(model="llava-13b"), HEADERS, 404, "model_not_found"),
        (_ask(image_part("data:image/png;base64,@@@")), HEADERS, 400, "invalid_image"),
        (_ask(*[image_part(data_url(c)) for c in ("red", "green", "blue", "white")]), HEADERS, 400, "too_many_images"),
        (_ask({"type": "image_url", "image_url": data_url("red")}), HEADERS, 400, "invalid_image"),
        (_ask(max_tokens=10**6), HEADERS, 400, None),
        (_ask(n=2), HEADERS, 400, None),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x" * 2_000_000}]}, HEADERS, 413,
         "request_too_large"),
        (b"[" * 100_000 + b"]" * 100_000, HEADERS, 400, None),  # nested past Python's parser
        ({"model": MODEL, "messages": [{"role": "user", "content": {"a": [[[[{"b": [[1]]}]]]]}}]}, HEADERS, 400, None),
    ]
    for body, headers, status, code in cases:
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(url, headers=headers, timeout=60, **sent)
        assert r.status_code == status, (body if isinstance(body, bytes) else r.text)
        openai_schemas.check("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    models = httpx.get(f"{api.url}/v1/models")
    assert models.status_code == 401
    openai_schemas.check("ErrorResponse", models.json())


def test_a_request_past_the_limits_is_refused_at_once(api):
    """Tens of thousands of one-word messages (or parts) are a 400 naming the limit, not minutes of CPU."""
    from llava_app.web.openai.request import MAX_MESSAGES, MAX_PARTS

    url = f"{api.url}/v1/chat/completions"
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "w"} for i in range(30_001)]
    start = time.monotonic()
    r = httpx.post(url, headers=HEADERS, timeout=60, json={"model": MODEL, "messages": many})
    assert time.monotonic() - start < 10
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    assert f"has 30001 entries; this server takes at most {MAX_MESSAGES}" in r.json()["error"]["message"]
    parts = [{"type": "text", "text": "w"}] * (MAX_PARTS + 1)
    r = httpx.post(url, headers=HEADERS, timeout=60, json={"model": MODEL, "messages": [{"role": "user",
                                                                                        "content": parts}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    nested = httpx.post(url, headers=HEADERS, timeout=60, content=b"[" * 100_000 + b"]" * 100_000)
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]["message"]
    for body in (r, nested):
        openai_schemas.check("ErrorResponse", body.json())


def test_malformed_content_parts_are_refused_saying_what_is_wrong(api):
    """Bodies that break OpenAI's request schema get a 400 naming the field, not a silent reading."""
    good = image_part(data_url("red"))
    bad_parts = {  # part -> what the message says
        "bare-string image_url": ({"type": "image_url", "image_url": data_url("red")},
                                  r"content\[0\]\.image_url must be an object like \{\"url\": .*got a string"),
        "no url": ({"type": "image_url", "image_url": {"detail": "low"}}, r"image_url\.url must be a non-empty string"),
        "bad detail": ({"type": "image_url", "image_url": {"url": data_url("red"), "detail": "huge"}},
                       r"image_url\.detail must be one of auto, low, high"),
        "not an object": ("just text", r"content\[0\] must be an object with a 'type'.*got a string"),
        "no type": ({"text": "hi"}, r"content\[0\]\.type is missing"),
        "text not a string": ({"type": "text", "text": 5}, r"content\[0\]\.text must be a string; got a number"),
        "unknown part": ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
                         r"'input_audio' is not supported"),
    }
    assert not openai_schemas.errors("CreateChatCompletionRequest", _ask(good))
    for name, (part, message) in bad_parts.items():
        body = _ask(part)
        if name != "unknown part":  # audio is valid OpenAI, just not served here
            assert openai_schemas.errors("CreateChatCompletionRequest", body), name
        r = httpx.post(f"{api.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=60)
        assert r.status_code == 400, name
        assert re.search(message, r.json()["error"]["message"]), (name, r.json())
        assert r.json()["error"]["param"].startswith("messages[0].content[0]")
    for content, message in [([], r"messages\[0\]\.content must be a string or a non-empty array"),
                             (None, r"messages\[0\]\.content must be .*got null")]:
        r = httpx.post(f"{api.url}/v1/chat/completions", headers=HEADERS, timeout=60,
                       json={"model": MODEL, "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 400 and re.search(message, r.json()["error"]["message"]), r.json()
    system_image = {"model": MODEL, "messages": [{"role": "system", "content": [good]},
                                                 {"role": "user", "content": "hi"}]}
    r = httpx.post(f"{api.url}/v1/chat/completions", json=system_image, headers=HEADERS, timeout=60)
    assert r.status_code == 400 and "only user messages may carry images" in r.json()["error"]["message"]


def test_image_urls_are_fetched_only_where_allowed(api, tmp_path):
    png = make_image("orange", (30, 30))

    with serving({"/photo.png": ("image/png", png)}) as address:
        url = address + "/photo.png"
        msgs = [{"role": "user", "content": [image_part(url), {"type": "text", "text": "What colour?"}]}]
        # This app was started with --openai-api-image-urls and allows the loopback test server: it fetches.
        by_url = api.client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3)
        by_data = api.client.chat.completions.create(
            model=MODEL, max_tokens=3,
            messages=[{"role": "user", "content": [image_part(data_url("orange", (30, 30))),
                                                   {"type": "text", "text": "What colour?"}]}])
        assert by_url.usage.prompt_tokens == by_data.usage.prompt_tokens
        assert by_url.choices[0].message.content == by_data.choices[0].message.content
        # By default, no server-side fetches.
        from llava_app.web.openai.endpoint import APIError, OpenAIEndpoint

        endpoint = OpenAIEndpoint(api.service, dataclasses.replace(api.config, openai_api_image_urls=False))
        with pytest.raises(APIError, match="does not fetch image URLs") as err:
            endpoint.parse({"model": MODEL, "messages": msgs})
        assert err.value.status == 400
        # The same fetcher as /chat's urls: an inner address is refused unless the operator allows its host.
        endpoint = OpenAIEndpoint(api.service, dataclasses.replace(api.config, image_url_allow=""))
        with pytest.raises(APIError, match="127.0.0.1 is a loopback address") as err:
            endpoint.parse({"model": MODEL, "messages": msgs})
        assert err.value.status == 400


def test_a_client_that_goes_away_stops_the_model(api, monkeypatch):
    requests = []
    inner = api.backend.stream

    def recording_stream(request):
        requests.append(request)
        yield from inner(request)

    monkeypatch.setattr(api.backend, "stream", recording_stream)
    msgs = [{"role": "user", "content": "Tell me a very long story."}]
    stream = api.client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2000, stream=True)
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if len(pieces) >= 3:
            break
    (request,) = requests
    assert not request.cancel.is_set()
    stream.close()
    deadline = time.monotonic() + 5
    while not request.cancel.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request.cancel.is_set(), "the engine was not told that the client left"
    started = time.monotonic()
    quick = api.client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
    assert quick.choices[0].message.content.strip()
    assert time.monotonic() - started < 8, "the model was still busy with the abandoned answer"


def test_an_engine_failure_is_an_error_not_a_dead_server(api, monkeypatch):
    from llava_app.engine.base import TextDelta
    from llava_app.errors import UserError

    def failing_stream(request):
        yield TextDelta("Once upon ")
        raise UserError("The model ran out of memory on this request.")

    monkeypatch.setattr(api.backend, "stream", failing_stream)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="ran out of memory"):
        api.client.chat.completions.create(model=MODEL, messages=msgs)
    stream = api.client.chat.completions.create(model=MODEL, messages=msgs, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="ran out of memory"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "Once upon "
    # Raw: the non-streamed answer and the stream's error event are both OpenAI ErrorResponses.
    failed = httpx.post(f"{api.url}/v1/chat/completions", json={"model": MODEL, "messages": msgs}, headers=HEADERS)
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "engine_refused"
    openai_schemas.check("ErrorResponse", failed.json())
    events = post_stream(api, {"model": MODEL, "messages": msgs, "stream": True})
    openai_schemas.check("CreateChatCompletionStreamResponse", events[0])
    assert "ran out of memory" in events[-1]["error"]["message"]
    openai_schemas.check("ErrorResponse", events[-1])
