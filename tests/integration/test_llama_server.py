"""The remote path end to end against a real serving engine: llama.cpp's ``llama-server``.

The server is the one in ``../shared/llama-server/`` beside the repository (or the folder named by
``LLAMA_SERVER_DIR``): a built ``llama-server`` and the tiny LLaVA-1.5 (random weights, the real
tokenizer and template, 576 tokens a picture) as GGUF with its vision projector; its README says how
they were made. One server per module, on a free loopback port, with a 4,096-token window and one
slot. Without the folder these tests are skipped; under ``CI=true`` they fail instead.

The chat layer (``ChatService``) drives the real ``OpenAIBackend``, as the page does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import attach_file, free_port, make_image

from llava_app.chat.context import ContextFitter
from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine.base import GenerationParams
from llava_app.engine.remote import OpenAIBackend
from llava_app.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = Path(os.environ.get("LLAMA_SERVER_DIR") or ROOT.parent / "shared" / "llama-server")
MODEL = "tiny-faithful-llava"
WINDOW = 4096
IMAGE_TOKENS = 576  # a LLaVA-1.5 picture
READY_LIMIT = 120  # seconds for the server to load (a loaded 2-core machine)


class LlamaServer:
    """``llama-server`` with the tiny LLaVA-1.5 on a free loopback port; its log in ``log``."""

    def __init__(self, folder: Path, log: Path):
        self.folder, self.log, self.port = folder, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LlamaServer:
        cmd = [str(self.folder / "llama-server"), "-m", str(self.folder / "tiny-llava-1.5-f32.gguf"),
               "--mmproj", str(self.folder / "tiny-llava-1.5-mmproj-f16.gguf"), "--host", "127.0.0.1",
               "--port", str(self.port), "-c", str(WINDOW), "-np", "1", "-t", "2", "--alias", MODEL]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_LIMIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"llama-server was not ready in {READY_LIMIT} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    if not (SERVER_DIR / "llama-server").exists():
        reason = f"no llama-server at {SERVER_DIR} (set LLAMA_SERVER_DIR to its folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true: the real-engine tests must run")
        pytest.skip(reason)
    server = LlamaServer(SERVER_DIR, tmp_path_factory.mktemp("llama") / "llama-server.log").start()
    yield server
    server.stop()


@pytest.fixture
def pictures(tmp_path) -> list[Path]:
    colours = ["red", "blue", "green", "orange"]
    paths = []
    for i, colour in enumerate(colours):
        p = tmp_path / f"p{i}.png"
        p.write_bytes(make_image(colour, (48 + 8 * i, 40)))
        paths.append(p)
    return paths


def _service(backend, store) -> ChatService:
    return ChatService(backend, store, context=ContextFitter(backend), stream_interval=0.0)


def _ask(service: ChatService, conv: Conversation, question: str, max_new_tokens: int) -> list[str]:
    service.ask(conv, question)
    return list(service.stream_answer(conv, GenerationParams(max_new_tokens=max_new_tokens)))


def _long_question(turn: int) -> str:
    """About 1,500 tokens of text: three such turns outgrow the window."""
    return f"Question {turn}: " + " ".join(f"w{turn}x{i}" for i in range(250)) + " What do you see?"


def test_a_conversation_longer_than_the_window_keeps_being_answered(llama, store, pictures):
    backend = OpenAIBackend(MODEL, f"{llama.url}/v1")
    assert backend.context_length == WINDOW and backend.tokens.kind == "llama.cpp"
    service = _service(backend, store)
    conv = Conversation()
    for p in pictures[:3]:
        attach_file(conv, store, p)
    sent = []
    for turn in range(3):
        if turn == 1:
            attach_file(conv, store, pictures[3])  # a picture joins mid-conversation
        growth = _ask(service, conv, _long_question(turn), 24)
        assert len(growth) > 1 and growth[-1].strip(), "the answer did not stream"
        info = conv.last_prompt
        sent.append(info.n_tokens)
        assert info.n_images == len(conv.images) and not info.estimated  # every picture, on every turn
        stats = conv.turns[-1].stats
        assert stats.prompt_tokens == info.n_tokens <= WINDOW - 24  # the server's own count
    # The first answer showed what a picture costs; from then on the app counts exactly what the server does.
    assert backend.tokens.image_tokens == IMAGE_TOKENS
    assert conv.first_visible > 0, f"nothing was dropped: {sent}"
    summary = conv.summary()
    assert [t["in_prompt"] for t in summary["turns"]].count(False) == conv.first_visible
    assert summary["context"]["prompt_tokens"] == sent[-1] and summary["context"]["window"] == WINDOW
    # "What the model sees" is the server's own rendering, each label right before its picture.
    assert info.source == "server" and "Image 1:<image>Image 2:<image>Image 3:<image>" in info.text.replace("\n", "")
    # An answer cut by its length limit says so, in the page's data and in /context.
    assert conv.turns[-1].cut == "length" and summary["turns"][-1]["finish_reason"] == "length"


def test_a_server_that_refuses_a_prompt_as_too_long_gets_it_shorter_once(llama, store, pictures, caplog):
    """The app counts by estimate and takes the window to be 8,192 (a server that says nothing, an operator's
    --context-length too large): the server refuses (HTTP 400, "exceeds the available context size"), older
    turns go and the question is asked again."""
    backend = OpenAIBackend(MODEL, f"{llama.url}/v1", check=False)
    backend.tokens.http = None  # no /props, no /tokenize: estimates
    backend.check()
    backend.context_length = 2 * WINDOW
    assert backend.estimates_tokens
    service = _service(backend, store)
    conv = Conversation()
    attach_file(conv, store, pictures[0])
    caplog.set_level("INFO", logger="llava_app.chat.context")
    for turn in range(3):
        _ask(service, conv, _long_question(turn), 16)
        assert conv.turns[-1].assistant.strip()
    assert "found conversation" in caplog.text and "too long (" in caplog.text  # refused, with its count
    assert conv.first_visible > 0
    assert conv.turns[-1].stats.prompt_tokens <= WINDOW


def test_stop_cancels_the_servers_task_and_a_killed_server_cuts_the_answer(llama, store, pictures):
    backend = OpenAIBackend(MODEL, f"{llama.url}/v1", timeout=30)
    service = _service(backend, store)
    conv = Conversation()
    attach_file(conv, store, pictures[0])
    params = GenerationParams(max_new_tokens=2048)  # half the window: a long answer to stop or cut
    _ask(service, conv, "What is in Image 1?", 4)  # the server's count of it shows what a picture costs

    # Stop: the server hears of it and cancels its task; /context still knows the prompt's size.
    log_before = llama.log.read_text(errors="replace").count("cancel task")
    service.ask(conv, "Tell me a long story about Image 1")
    stream = service.stream_answer(conv, params)
    assert next(stream).strip() or next(stream).strip()
    service.stop(conv)
    list(stream)
    deadline = time.monotonic() + 20
    while llama.log.read_text(errors="replace").count("cancel task") == log_before:
        assert time.monotonic() < deadline, "the server never cancelled its task"
        time.sleep(0.05)
    turn = conv.summary()["turns"][-1]
    assert turn["stopped"] is True and turn["cut"] is None and turn["assistant"].strip()
    # Not 0: the prompt's size as the app counted it, exactly, before it was sent (llama.cpp sends no usage then)
    context = conv.summary()["context"]
    assert context["prompt_tokens"] > IMAGE_TOKENS and context["prompt_tokens_estimated"] is False
    assert conv.turns[-1].stats.prompt_tokens == context["prompt_tokens"]

    # Killed mid-answer: the part that arrived stays, marked as cut off by the server (not as a Stop), with
    # its usage; the mark survives a reload; once the server is back the conversation goes on.
    service.ask(conv, "And another one, longer")
    stream = service.stream_answer(conv, params)
    assert next(stream) is not None
    llama.stop(signal.SIGKILL)
    with pytest.raises(UserError, match="cut off"):
        list(stream)
    last = conv.turns[-1]
    assert last.assistant.strip() and last.cut == "server" and not last.stopped
    assert last.stats is not None and last.stats.completion_tokens > 0 and last.stats.prompt_tokens > IMAGE_TOKENS
    assert Conversation.restore(conv.to_record()).turns[-1].cut == "server"
    with pytest.raises(UserError, match="Cannot reach"):
        _ask(service, conv, "Are you there?", 8)
    assert len(conv.turns) == 3
    llama.start()
    growth = _ask(service, conv, "Are you back?", 8)
    assert growth[-1].strip() and conv.turns[-1].cut in ("", "length") and len(conv.turns) == 4
