"""/chat takes videos and PDFs in ``images`` and http(s) ``urls``, through gradio_client, on the tiny model."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import launched_app, make_image
from fakes import RecordingBackend
from gradio_client import Client, handle_file
from media_files import make_pdf, make_video

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.errors import UserError

pytest.importorskip("av")
pytest.importorskip("pypdfium2")

PNG = make_image("orange", (40, 30))


class _Pictures(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/photo.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        else:  # anything else redirects to another loopback address, which is not allowed
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_address[1]}/photo.png")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pictures():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache):
    from llava_app.config import Config

    data = tmp_path_factory.mktemp("data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=4, max_images=8,
                    image_urls=True, image_url_allow="127.0.0.1")
    with launched_app(config) as (url, app, _):
        yield url, app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "clip.mp4").write_bytes(make_video(seconds=4, fps=10))
    (root / "report.pdf").write_bytes(make_pdf(3))
    return root


def test_a_video_becomes_keyframes_the_model_is_told_about(server, files):
    url, _ = server
    client = Client(url, verbose=False)
    answer = client.predict("What happens in this clip?", [handle_file(str(files / "clip.mp4"))], api_name="/chat")
    assert isinstance(answer, str)
    ctx = client.predict(api_name="/context")
    assert [im["name"] for im in ctx["images"]] == [f"clip.mp4 @ 0:0{t}.5" for t in range(4)]
    assert ctx["prompt_images"] == 4 and ctx["prompt"].count("<image>") == 4
    assert "are frames of one video, clip.mp4, in time order (Image 1 at 0:00.5" in ctx["prompt"]


def test_a_pdf_becomes_its_pages(server, files):
    url, _ = server
    client = Client(url, verbose=False)
    client.predict("Summarise the report", [handle_file(str(files / "report.pdf"))], api_name="/chat")
    ctx = client.predict(api_name="/context")
    assert [(im["label"], im["name"]) for im in ctx["images"]] == [
        ("Image 1", "report.pdf p. 1"), ("Image 2", "report.pdf p. 2"), ("Image 3", "report.pdf p. 3")]
    assert ctx["prompt_images"] == 3 and "frames of one video" not in ctx["prompt"]


def test_urls_are_fetched_after_the_files_and_refusals_name_the_reason(server, pictures, image_files):
    url, _ = server
    client = Client(url, verbose=False)
    client.predict("Compare them", [handle_file(str(image_files[0]))], [f"{pictures}/photo.png"], api_name="/chat")
    ctx = client.predict(api_name="/context")
    assert [(im["name"], im["width"], im["height"]) for im in ctx["images"]] == [
        ("photo1.png", 64, 48), ("photo.png", 40, 30)]
    with pytest.raises(Exception, match="127.0.0.2 is a loopback address"):
        client.predict("And this one?", [handle_file(str(image_files[1]))], [f"{pictures}/elsewhere"],
                       api_name="/chat")
    after = client.predict(api_name="/context")
    assert after["image_count"] == 2 and len(after["turns"]) == 1  # all or nothing: the photo did not join


def test_decoding_and_fetching_run_off_the_event_loop(server, files, monkeypatch):
    url, app = server
    threads = []
    attach = app.service.attach

    def recording(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            threads.append("event loop")
        except RuntimeError:
            threads.append("worker thread")
        return attach(*args, **kwargs)

    monkeypatch.setattr(app.service, "attach", recording)
    Client(url, verbose=False).predict("What is this?", [handle_file(str(files / "clip.mp4"))], api_name="/chat")
    assert threads == ["worker thread"]


def test_urls_are_refused_unless_the_operator_turns_them_on(store):
    service = ChatService(RecordingBackend(), store)  # no --image-urls: nothing is fetched, nothing is asked of a model
    with pytest.raises(UserError, match="This server does not fetch pictures from links"):
        service.add_urls(Conversation(), ["http://127.0.0.1:9/photo.png"])
