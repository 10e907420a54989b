"""The layering the project promises: gradio only in ui.py, torch/transformers only lazily."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llava_app"
TORCH_OK = {"backends/local.py", "kvcache.py", "models.py", "tiny.py", "bench.py"}


def _imports(path: Path, name: str) -> list[str]:
    pattern = re.compile(rf"^\s*(import {name}\b|from {name}\b)", re.M)
    return pattern.findall(path.read_text())


def test_only_the_ui_module_imports_gradio():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "ui.py" and _imports(p, "gradio")]
    assert offenders == []


def test_torch_and_transformers_only_in_the_local_engine_and_model_code():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if str(p.relative_to(PACKAGE)) not in TORCH_OK
                 and (_imports(p, "torch") or _imports(p, "transformers"))]
    assert offenders == []


def test_importing_the_app_layers_loads_neither_torch_nor_transformers():
    code = ("import sys; import llava_app.config, llava_app.conversation, llava_app.service, llava_app.images, "
            "llava_app.backends, llava_app.ui; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
