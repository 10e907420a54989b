"""Limits: question length, images per message and per conversation, upload size; each a clear message."""

from __future__ import annotations

import httpx
import pytest
from conftest import launched_app, make_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.config import Config, parse_config
from llava_app.engine.base import Backend
from llava_app.errors import UserError


class _NoModel(Backend):
    """Limits are checked before any engine is asked; this one fails the test if it is."""

    def stream(self, request):
        raise AssertionError("the engine was asked despite a refused input")


@pytest.fixture
def service(store):
    return ChatService(_NoModel(), store, max_images=3, max_images_per_message=2, max_question_chars=50)


def _files(tmp_path, n, start=0):
    out = []
    for i in range(start, start + n):
        p = tmp_path / f"p{i}.png"
        p.write_bytes(make_image((20 * i % 256, 100, 200 - i), (30 + i, 30)))
        out.append((str(p), p.name))
    return out


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", None])
def test_empty_questions_are_refused(service, text):
    with pytest.raises(UserError, match="Type a question first"):
        service.check_question(text)


def test_question_length_limit_is_exact_and_clear(service):
    assert service.check_question("  " + "x" * 50 + "  ") == "x" * 50  # surrounding blanks do not count
    with pytest.raises(UserError, match="51 characters long; the limit is 50. Shorten it"):
        service.check_question("x" * 51)
    conv = Conversation()
    with pytest.raises(UserError):
        service.ask(conv, "y" * 51)
    assert conv.turns == []  # nothing was added, nothing was cut


def test_images_per_message_limit(service, tmp_path):
    conv = Conversation()
    result = service.add_images(conv, _files(tmp_path, 3))
    assert result.added == ["Image 1", "Image 2"]
    assert len(result.errors) == 1 and "At most 2 new images go with one question" in str(result.errors[0])
    assert "p2.png" in str(result.errors[0])
    conv.ask("about these two")
    conv.answer("ok")
    assert service.add_images(conv, _files(tmp_path, 1, start=3)).added == ["Image 3"]  # a new message may add more


def test_images_per_conversation_limit(service, tmp_path):
    conv = Conversation()
    for batch in range(2):
        service.add_images(conv, _files(tmp_path, 2, start=2 * batch))
        conv.ask(f"q{batch}")
        conv.answer("a")
    assert len(conv.images) == 3
    result = service.add_images(conv, _files(tmp_path, 1, start=9))
    assert result.added == [] and "already has 3 images, the limit is 3" in str(result.errors[0])


def test_limits_have_flags_and_variables():
    config = parse_config(["--max-images", "5", "--max-images-per-message", "2", "--max-question-chars", "99",
                           "--max-upload-mb", "1.5"], env={"LLAVA_APP_SESSION_TTL": "120"})
    assert (config.max_images, config.max_images_per_message, config.max_question_chars) == (5, 2, 99)
    assert config.max_upload_bytes == int(1.5 * 1024 * 1024) and config.session_ttl == 120
    with pytest.raises(SystemExit, match="max-images-per-message must be at least 1"):
        parse_config(["--max-images-per-message", "0"], env={})


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, tiny_cache, local_backend):
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path_factory.mktemp("lim")),
                    max_new_tokens=4, max_upload_mb=0.05, max_images_per_message=2, max_question_chars=200)
    with launched_app(config, local_backend()) as (url, app, demo):
        yield url, demo


def test_api_refuses_long_and_empty_questions_and_keeps_the_conversation(small_server, image_files, tmp_path):
    url, _ = small_server
    client = Client(url, verbose=False)
    client.predict("first", [handle_file(str(image_files[0]))], api_name="/chat")
    with pytest.raises(Exception, match="201 characters long; the limit is 200"):
        client.predict("z" * 201, [], api_name="/chat")
    with pytest.raises(Exception, match="Type a question first"):
        client.predict("", [], api_name="/chat")
    three = [image_files[1], image_files[2], tmp_path / "fourth.png"]
    three[2].write_bytes(make_image("yellow", (50, 50)))
    with pytest.raises(Exception, match="At most 2 new images go with one question"):
        client.predict("three at once", [handle_file(str(p)) for p in three], api_name="/chat")
    ctx = client.predict(api_name="/context")
    assert [t["user"] for t in ctx["turns"]] == ["first"]
    assert [im["label"] for im in ctx["images"]] == ["Image 1"]  # a refused request attaches nothing
    client.predict("two are fine", [handle_file(str(p)) for p in three[:2]], api_name="/chat")
    assert [im["label"] for im in client.predict(api_name="/context")["images"]] == ["Image 1", "Image 2", "Image 3"]
    assert client.predict("still fine?", [], api_name="/chat").strip()


def test_upload_size_limit_is_enforced_by_the_server(small_server, tmp_path):
    url, _ = small_server
    over = tmp_path / "over.png"
    over.write_bytes(make_image(size=(64, 48)) + b"\0" * 100_000)  # 100 KB > 0.05 MB: our own clear message
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match=r"over.png is 0.0\d+ MB; the limit is 0.05 MB"):
        client.predict("hi", [handle_file(str(over))], api_name="/chat")
    big = tmp_path / "big.png"
    big.write_bytes(make_image(size=(64, 48)) + b"\0" * 300_000)  # far over (4x the limit): Gradio refuses it
    # The Python client refuses before sending ...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        Client(url, verbose=False).predict("hi", [handle_file(str(big))], api_name="/chat")
    # ... and a client that sends anyway is refused by the server, with the limit in the answer.
    resp = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", big.read_bytes(), "image/png")})
    assert resp.status_code == 413
    assert "209715" in resp.text or "maximum" in resp.text.lower()
    ok = httpx.post(url + "gradio_api/upload", files={"files": ("ok.png", make_image(), "image/png")})
    assert ok.status_code == 200
