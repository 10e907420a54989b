"""How ``build_demo`` wires the page's load events (built, not launched; the recording fake engine)."""

from __future__ import annotations

from fakes import RecordingBackend

from llava_app.application import create_app
from llava_app.config import Config
from llava_app.web.page.main import build_demo


def test_only_the_pages_own_load_handler_sets_the_conversation_on_load(tmp_path):
    """Gradio adds a queued load event for a ``gr.State`` built from a factory; it would race ``on_load_saved``
    (which restores the saved conversation into that state) and, ending last, swap it for an empty one."""
    app = create_app(Config(model="recording-fake", data_dir=str(tmp_path / "data")), backend=RecordingBackend())
    try:
        demo = build_demo(app)
        config = demo.get_config_file()
        states = [c["id"] for c in config["components"] if c["type"] == "state"]
        writers = [demo.fns[d["id"]].name for d in config["dependencies"]
                   if any(event == "load" for _, event in d["targets"]) and set(d["outputs"]) & set(states)]
        assert writers == ["on_load_saved"]
        demo.close()
    finally:
        app.close()
