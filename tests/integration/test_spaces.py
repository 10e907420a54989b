"""Hugging Face Spaces: the ZeroGPU decorator with and without the ``spaces`` package, and Spaces defaults."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.config import Config, parse_config
from llava_app.engine.base import GenerationParams
from llava_app.engine.hosting.spaces import GPU_MAX_SECONDS, GPU_MIN_SECONDS, gpu_seconds


class StandInSpaces(types.ModuleType):
    """A local ``spaces`` module that records each ``GPU`` call and behaves as ZeroGPU does.

    Like ZeroGPU it computes a callable duration from the call's arguments, and sends
    the arguments and every yielded item through pickle (ZeroGPU's worker is another
    process); closing the consumer's generator closes the task's generator.
    """

    def __init__(self, lends_gpu: bool = True):
        super().__init__("spaces")
        self.lends_gpu = lends_gpu
        self.decorations: list[object] = []  # the duration passed to each @GPU(...)
        self.calls: list[dict] = []  # one per GPU call: its duration, items sent, whether it was closed early

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 - the real name
        def decorate(fn):
            self.decorations.append(duration)
            if not self.lends_gpu:  # off ZeroGPU the real package returns the function itself
                return fn

            def on_gpu(*args, **kwargs):
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                from gradio.context import LocalContext

                call = {"duration": duration(*args, **kwargs) if callable(duration) else duration,
                        "items": 0, "closed_early": False,
                        "request": LocalContext.request.get(None)}  # what ZeroGPU charges the quota to
                self.calls.append(call)
                inner = fn(*args, **kwargs)
                try:
                    for item in inner:
                        call["items"] += 1
                        yield pickle.loads(pickle.dumps(item))
                except GeneratorExit:
                    call["closed_early"] = True
                    raise
                finally:
                    inner.close()

            return on_gpu

        return decorate if task is None else decorate(task)


@pytest.fixture
def config(tmp_path, tiny_cache):
    return Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "data"), max_new_tokens=12)


def _answer(service: ChatService, store_images: list, max_new_tokens: int, question="What is in Image 1?"):
    conv = Conversation()
    result = service.add_images(conv, [(str(p), p.name) for p in store_images])
    assert not result.errors
    service.ask(conv, question)
    text = ""
    for text in service.stream_answer(conv, GenerationParams(max_new_tokens=max_new_tokens)):  # noqa: B007 - the last is the answer
        pass
    return conv, text


def test_generation_runs_under_spaces_gpu_with_a_duration_that_fits_the_answer(monkeypatch, config, store,
                                                                                  image_files):
    from llava_app.engine import make_backend
    from llava_app.engine.hosting.zerogpu import ZeroGPUBackend

    spaces = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    backend = make_backend(config, store)
    try:
        assert isinstance(backend, ZeroGPUBackend)
        assert spaces.decorations and all(callable(d) for d in spaces.decorations)
        service = ChatService(backend, store)
        conv, short = _answer(service, image_files[:2], 8)
        assert len(spaces.calls) == 1
        assert spaces.calls[0]["duration"] == gpu_seconds(8, 2)
        # The prompt info crossed the process boundary too.
        assert conv.last_prompt.n_images == 2 and conv.last_prompt.image_labels == ["Image 1", "Image 2"]
        assert conv.turns[-1].stats.completion_tokens == 8 and conv.turns[-1].stats.finish_reason == "length"
        # Same greedy answer as the engine gives without the decorator: it is the real generation.
        _, direct = _answer(ChatService(backend.engine, store), image_files[:2], 8)
        assert short == direct and short.strip()
    finally:
        backend.close()


def test_in_the_app_the_gpu_call_knows_the_visitor(monkeypatch, config, image_files):
    """ZeroGPU reads gradio's request from the calling context to charge the visitor's quota."""
    import os

    from conftest import launched_app
    from gradio_client import Client, handle_file

    from llava_app.engine import make_app_backend
    from llava_app.storage.images import ImageStore

    spaces = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    backend = make_app_backend(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend=backend) as (url, _, _):
        answer = Client(url, verbose=False).predict("What is in Image 1?", [handle_file(str(image_files[0]))],
                                                    api_name="/chat")
    assert answer.strip() and len(spaces.calls) == 1
    assert spaces.calls[0]["request"] is not None
    assert spaces.calls[0]["duration"] == gpu_seconds(config.max_new_tokens, 1)


def test_stop_closes_the_gpu_call(monkeypatch, config, store, image_files):
    from llava_app.engine import make_backend

    spaces = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    backend = make_backend(config, store)
    try:
        service = ChatService(backend, store)
        conv = Conversation()
        service.add_images(conv, [(str(image_files[0]), "a.png")])
        service.ask(conv, "Tell me a long story")
        stream = service.stream_answer(conv, GenerationParams(max_new_tokens=500))
        next(stream)
        service.stop(conv)
        for _ in stream:
            pass
        call = spaces.calls[-1]
        assert call["duration"] == gpu_seconds(500, 1) > gpu_seconds(8, 2)  # a longer answer asks for more time
        assert call["closed_early"] is True
        assert call["items"] < 100  # far from the 500 tokens asked for
        assert conv.turns[-1].stopped is True
    finally:
        backend.close()


def test_without_spaces_the_engine_is_used_directly(monkeypatch, config, store, image_files):
    from llava_app.engine import make_backend
    from llava_app.engine.local.backend import LocalBackend

    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    backend = make_backend(config, store)
    try:
        assert type(backend) is LocalBackend
        _, text = _answer(ChatService(backend, store), image_files[:1], 6)
        assert text.strip()
    finally:
        backend.close()


def test_spaces_off_zerogpu_leaves_the_engine_as_it_is(monkeypatch, config, store):
    from llava_app.engine import make_backend
    from llava_app.engine.local.backend import LocalBackend

    spaces = StandInSpaces(lends_gpu=False)
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    backend = make_backend(config, store)
    try:
        assert type(backend) is LocalBackend and spaces.decorations
    finally:
        backend.close()


def test_zerogpu_keeps_the_start_up_model(monkeypatch, config, store):
    """ZeroGPU moves only start-up weights to its GPUs: no model picker there."""
    from llava_app.engine import make_app_backend
    from llava_app.engine.hosting.zerogpu import ZeroGPUBackend
    from llava_app.engine.switchable import SwitchableBackend

    monkeypatch.setitem(sys.modules, "spaces", StandInSpaces())
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    config = Config(**{**config.__dict__, "allowed_models": "tiny-random-llava-next"})
    backend = make_app_backend(config, store)
    try:
        assert isinstance(backend, ZeroGPUBackend) and not isinstance(backend, SwitchableBackend)
    finally:
        backend.close()
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setitem(sys.modules, "spaces", None)
    backend = make_app_backend(config, store)
    try:
        assert isinstance(backend, SwitchableBackend)
    finally:
        backend.close()


def test_gpu_seconds_grow_with_the_answer_and_stay_in_bounds():
    assert gpu_seconds(1, 0) == GPU_MIN_SECONDS
    assert gpu_seconds(256, 1) < gpu_seconds(1024, 1) < gpu_seconds(1024, 4)
    assert gpu_seconds(100_000, 6) == GPU_MAX_SECONDS


def test_on_spaces_the_app_listens_on_all_interfaces():
    assert parse_config([], env={"SPACE_ID": "someone/llava-app"}).host == "0.0.0.0"
    assert parse_config([], env={}).host == "127.0.0.1"
    assert parse_config(["--host", "127.0.0.1"], env={"SPACE_ID": "x/y"}).host == "127.0.0.1"
    assert parse_config([], env={"SPACE_ID": "x/y", "LLAVA_APP_HOST": "10.0.0.5"}).host == "10.0.0.5"


def test_readme_front_matter_is_a_spaces_config_matching_requirements():
    import re
    from pathlib import Path

    import gradio
    import yaml

    from llava_app.config import DEFAULT_MODEL
    from llava_app.engine.catalog import PRESETS

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "Spaces reads the configuration from the README's first lines"
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    pinned = re.search(r"^gradio==(\S+)", (root / "requirements.txt").read_text(), re.M).group(1)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == pinned == gradio.__version__
    assert (root / meta["app_file"]).is_file()
    assert meta["suggested_hardware"] and meta["license"]
    assert len(meta["short_description"]) <= 60  # the Hub's limit
    assert set(meta["models"]) == {p.id for p in PRESETS}
    assert meta["preload_from_hub"] == [DEFAULT_MODEL]


def test_the_licence_file_is_the_one_the_front_matter_names():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    meta = yaml.safe_load((root / "README.md").read_text(encoding="utf-8").split("---\n", 2)[1])
    assert meta["license"] == "apache-2.0"
    words = (root / "LICENSE").read_text(encoding="ascii").split()
    assert words[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in " ".join(words)
    assert "Copyright 2026 the llava-app authors" in " ".join(words)
