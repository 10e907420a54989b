"""The app as a gradio_client API, against a launched server (the core issue's 'done when')."""

from __future__ import annotations

import time

import pytest
from conftest import launched_app
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache):
    from llava_app.config import Config

    data = tmp_path_factory.mktemp("data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=16)
    with launched_app(config) as (url, _, _):
        yield url


def test_two_images_then_text_only_follow_up_keeps_both_images(server, image_files):
    client = Client(server, verbose=False)
    first = client.predict("Compare Image 1 and Image 2", [handle_file(str(p)) for p in image_files[:2]],
                           api_name="/chat")
    assert isinstance(first, str) and first.strip()
    second = client.predict("Which one is brighter?", [], api_name="/chat")
    assert second.strip()
    ctx = client.predict(api_name="/context")
    assert [im["label"] for im in ctx["images"]] == ["Image 1", "Image 2"]
    assert ctx["prompt_images"] == 2
    assert ctx["prompt_image_labels"] == ["Image 1", "Image 2"]
    assert ctx["prompt"].count("<image>") == 2
    assert "Which one is brighter?" in ctx["prompt"] and "Compare Image 1 and Image 2" in ctx["prompt"]
    assert ctx["prompt_tokens"] > 2 * 16  # two images of 16 tokens each, plus the text
    assert [t["user"] for t in ctx["turns"]] == ["Compare Image 1 and Image 2", "Which one is brighter?"]
    assert ctx["turns"][0]["assistant"] == first


def test_each_client_has_its_own_conversation(server, image_files):
    a, b = Client(server, verbose=False), Client(server, verbose=False)
    a.predict("What is in Image 1?", [handle_file(str(image_files[0]))], api_name="/chat")
    b.predict("Hello there", [], api_name="/chat")
    ctx_a, ctx_b = a.predict(api_name="/context"), b.predict(api_name="/context")
    assert ctx_a["image_count"] == 1 and ctx_b["image_count"] == 0
    assert ctx_a["conversation_id"] != ctx_b["conversation_id"]
    assert [t["user"] for t in ctx_b["turns"]] == ["Hello there"]


def test_reset_starts_a_new_conversation(server, image_files):
    client = Client(server, verbose=False)
    client.predict("What is this?", [handle_file(str(image_files[0]))], api_name="/chat")
    client.predict(api_name="/reset")
    ctx = client.predict(api_name="/context")
    assert ctx["image_count"] == 0 and ctx["turns"] == []


def test_bad_upload_is_a_clear_error_and_the_conversation_survives(server, image_files, tmp_path):
    client = Client(server, verbose=False)
    client.predict("First question", [handle_file(str(image_files[0]))], api_name="/chat")
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    with pytest.raises(Exception, match="not an image"):
        client.predict("and this?", [handle_file(str(bogus))], api_name="/chat")
    with pytest.raises(Exception, match="Type a question"):
        client.predict("   ", [], api_name="/chat")
    ctx = client.predict(api_name="/context")
    assert ctx["image_count"] == 1 and len(ctx["turns"]) == 1
    assert client.predict("still there?", [], api_name="/chat").strip()


def test_streaming_grows_and_cancel_frees_the_model_at_once(tmp_path, tiny_cache, image_files):
    from llava_app.config import Config

    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=2000,
                    stream_delay=0.02)
    with launched_app(config) as (url, _, _):
        client = Client(url, verbose=False)
        job = client.submit("Tell me a long story about Image 1", [handle_file(str(image_files[0]))],
                            api_name="/chat")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            out = job.outputs()
            if out and (not seen or out[-1] != seen[-1]):
                seen.append(out[-1])
            time.sleep(0.05)
        assert len(seen) >= 3, "the answer did not stream"
        assert all(seen[i + 1].startswith(seen[i].rstrip()) for i in range(len(seen) - 1))
        job.cancel()
        # A second client's question starts streaming at once: the model was freed.
        other = Client(url, verbose=False)
        started = time.monotonic()
        second = other.submit("quick one", [], api_name="/chat")
        while not second.outputs() and time.monotonic() - started < 30:
            time.sleep(0.05)
        waited = time.monotonic() - started
        second.cancel()
        assert second.outputs(), "the next question was not answered"
        # The first answer had ~1900 tokens (38 s) to go; a freed model starts the next at once.
        assert waited < 8, f"the next question waited {waited:.1f} s"
        ctx = client.predict(api_name="/context")
        assert ctx["turns"][0]["stopped"] is True


def test_a_client_that_cancels_and_asks_again_at_once_is_answered(tmp_path):
    """gradio_client's job.cancel() then the next question 0.3 s later, four times in one conversation,
    while each step of the model takes 0.8 s (a loaded machine): each new question waits until the
    cancelled answer has stopped (it is saved as stopped), then is answered; none is refused as "still
    being written"."""
    from fakes import RecordingBackend

    from llava_app.config import Config

    backend = RecordingBackend()
    backend.step_s = 0.8
    config = Config(model="recording-fake", data_dir=str(tmp_path / "d"))
    with launched_app(config, backend) as (url, _, _):
        client = Client(url, verbose=False)
        for i in range(4):
            backend.enqueue(*[f"long{i} "] * 50).enqueue(f"short{i}")
            job = client.submit(f"Tell me a long story ({i})", [], api_name="/chat")
            deadline = time.monotonic() + 30
            while not job.outputs() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert job.outputs(), "the answer did not stream"
            job.cancel()
            time.sleep(0.3)
            assert client.predict(f"A short one ({i})", [], api_name="/chat") == f"short{i}"
        ctx = client.predict(api_name="/context")
    assert [t["user"] for t in ctx["turns"]] == [q for i in range(4)
                                                 for q in (f"Tell me a long story ({i})", f"A short one ({i})")]
    assert [t["stopped"] for t in ctx["turns"]] == [True, False] * 4
    assert all(t["assistant"].startswith(f"long{i}") for i, t in enumerate(ctx["turns"][::2]))
