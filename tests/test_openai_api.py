"""The app's own OpenAI-compatible endpoint (--openai-api), driven by the official openai client."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import openai
import pytest

from conftest import free_port, launched_app, make_image

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
        yield SimpleNamespace(url=url, app=app, demo=demo, service=app.service, backend=app.service.backend, client=client,
                              config=config)


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
    import httpx

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
    tokenizer = api.backend.processor.tokenizer
    assert usage.completion_tokens == len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert 0 < usage.completion_tokens <= 12
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


def test_image_urls_are_fetched_only_where_allowed(api, tmp_path):
    png = make_image("orange", (30, 30))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/photo.png"
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
        from llava_app.web.openai_api import APIError, OpenAIEndpoint

        endpoint = OpenAIEndpoint(api.service, dataclasses.replace(api.config, openai_api_image_urls=False))
        with pytest.raises(APIError, match="does not fetch image URLs") as err:
            endpoint.parse({"model": MODEL, "messages": msgs})
        assert err.value.status == 400
        # The same fetcher as /chat's urls: an inner address is refused unless the operator allows its host.
        endpoint = OpenAIEndpoint(api.service, dataclasses.replace(api.config, image_url_allow=""))
        with pytest.raises(APIError, match="127.0.0.1 is a loopback address") as err:
            endpoint.parse({"model": MODEL, "messages": msgs})
        assert err.value.status == 400
    finally:
        httpd.shutdown()
        httpd.server_close()


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
    from llava_app.errors import UserError

    def failing_stream(request):
        yield "Once upon "
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
