"""What gradio_compat leaves out of a start: Gradio's stub rewriting at import (checked on a real remote-only start
in integration/test_remote_app.py; here, that nothing is hooked once gradio is in) and the FastAPI apps Gradio
builds before ``launch()`` and never serves."""

from __future__ import annotations

import sys

import httpx
from conftest import launched_app


def test_after_gradio_is_imported_nothing_is_hooked(monkeypatch):
    from llava_app.web import gradio_compat

    monkeypatch.setitem(sys.modules, "gradio", sys.modules.get("gradio", object()))
    before = list(sys.meta_path)
    gradio_compat.no_stubs_at_import()
    assert sys.meta_path == before


def test_a_launch_builds_gradios_app_once_and_serves_the_page_and_its_api(monkeypatch, tmp_path):
    from fakes import RecordingBackend
    from gradio.routes import App

    from llava_app.config import Config

    built = []
    create = App.create_app  # (the app's own wrapper, if an earlier build in this process installed it)

    def counted(*args, **kwargs):
        built.append(create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(App, "create_app", staticmethod(counted))
    backend = RecordingBackend().enqueue("a red square")
    with launched_app(Config(model="recording-fake", data_dir=str(tmp_path / "d")), backend) as (url, _, demo):
        assert len(built) == 1 and demo.app is built[0] and demo.server_app is built[0]  # Gradio alone: four
        assert httpx.get(url, timeout=30).status_code == 200
        assert "/chat" in httpx.get(url + "gradio_api/info", timeout=30).json()["named_endpoints"]
