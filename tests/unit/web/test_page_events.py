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


def test_regenerate_chains_its_own_answer_and_send_the_ordinary_one(tmp_path):
    """Regenerate's sampling travels with its own event chain (``on_generate_again``), never on the server for
    another event to find: every other question is answered by ``on_generate``."""
    app = create_app(Config(model="recording-fake", data_dir=str(tmp_path / "data")), backend=RecordingBackend())
    try:
        demo = build_demo(app)
        deps = {d["id"]: d for d in demo.get_config_file()["dependencies"]}

        def started_by(dep_id: int) -> str:
            """The named handler whose success chain runs ``dep_id`` (the lambdas that lock controls are skipped)."""
            while (before := deps[dep_id]["trigger_after"]) is not None:
                dep_id = before
                if demo.fns[dep_id].name != "<lambda>":
                    return demo.fns[dep_id].name
            return ""

        answers = {name: sorted({started_by(i) for i in deps if demo.fns[i].name == name})
                   for name in ("on_generate", "on_generate_again")}
        assert answers["on_generate_again"] == ["on_regenerate"]
        assert "on_regenerate" not in answers["on_generate"] and "on_send" in answers["on_generate"]
        demo.close()
    finally:
        app.close()


def test_events_that_show_no_progress_send_their_statuses_where_nothing_is_copied(tmp_path):
    """Gradio's page hands every status of an event (each streamed token's too) to each component it counts as
    showing that event's progress, copying the component's whole value each time: an event that shows none
    names the conversation's State, never drawn; the strip's upload and delete show theirs on the strip alone."""
    app = create_app(Config(model="recording-fake", data_dir=str(tmp_path / "data")), backend=RecordingBackend())
    try:
        demo = build_demo(app)
        config = demo.get_config_file()
        ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
        states = [c["id"] for c in config["components"] if c["type"] == "state"]
        shown_on = {demo.fns[d["id"]].name: d["show_progress_on"] for d in config["dependencies"]}
        hidden = [d for d in config["dependencies"] if d["show_progress"] == "hidden"]
        assert len(hidden) > 50 and {tuple(d["show_progress_on"] or ()) for d in hidden} == {(states[0],)}
        assert "on_generate" in {demo.fns[d["id"]].name for d in hidden}
        assert shown_on["on_upload"] == shown_on["on_delete"] == [ids["gallery"]]
        demo.close()
    finally:
        app.close()
