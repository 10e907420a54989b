"""``import gradio`` through the web layer leaves out Gradio's stub rewriting (gradio_compat.no_stubs_at_import)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# A fresh interpreter, as app.py starts: the files gradio opens while it is imported (an audit hook), then a page
# built from the components whose stubs are no longer written, to show they work as before.
_IMPORT = """
import json, sys
opened = []
sys.addaudithook(lambda event, args: event == "open" and isinstance(args[0], str) and opened.append(args[0]))
import llava_app.web
import gradio as gr
with gr.Blocks() as demo:
    box, button, gallery = gr.Textbox(), gr.Button("Go"), gr.Gallery()
    button.click(lambda text: text, box, box)
print(json.dumps({"stubs_read": sorted({p for p in opened if p.endswith(".pyi") and "/gradio/" in p}),
                  "events": len(demo.fns), "finders_left": [type(f).__name__ for f in sys.meta_path
                                                          if type(f).__name__ == "_NoStubsAtImport"]}))
"""


def test_gradio_imported_through_the_web_layer_reads_none_of_its_stubs_and_its_components_work():
    out = subprocess.run([sys.executable, "-c", _IMPORT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"stubs_read": [], "events": 1, "finders_left": []}


def test_after_gradio_is_imported_nothing_is_hooked(monkeypatch):
    from llava_app.web import gradio_compat

    monkeypatch.setitem(sys.modules, "gradio", sys.modules.get("gradio", object()))
    before = list(sys.meta_path)
    gradio_compat.no_stubs_at_import()
    assert sys.meta_path == before
