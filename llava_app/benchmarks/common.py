"""What the benchmarks share: measuring, test pictures, model preparation, launching the app, writing JSON."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: the repository's root (where ``app.py`` is)
REPO = Path(__file__).resolve().parents[2]


def quiet_environment() -> None:
    """No Hub look-ups and no Gradio analytics during a benchmark (unless the shell says otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


# ----- measuring ----------------------------------------------------------------------------------
class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in MiB over the ``with`` block."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


class VisionCalls:
    """Counts forward calls of the model's vision tower (and the images or tiles it saw)."""

    def __init__(self, model):
        self.calls = 0
        self.inputs = 0
        tower = getattr(model.model, "vision_tower", None) or model.model.visual  # LLaVA families; Qwen-VL
        tower.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.calls += 1
        grid = kwargs.get("grid_thw")  # Qwen-VL: all pictures' patches in one sequence, one grid row each
        self.inputs += int(grid.shape[0]) if grid is not None else int(args[0].shape[0]) if args else 0


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def torch_threads() -> int:
    """The number of threads torch uses in this process."""
    import torch

    return torch.get_num_threads()


def threads_env(threads: int) -> dict[str, str] | None:
    """A child process's environment with ``threads`` OpenMP threads (None: inherit; 0 means torch's default)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None


# ----- inputs -------------------------------------------------------------------------------------
def bench_images(folder: Path, n: int = 4) -> list[Path]:
    """``n`` deterministic photo-sized pictures (gradients, shapes and noise), saved as PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = [(640, 480), (480, 640), (800, 600), (512, 512)][i % 4]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1)) % 256, (y * (i + 2)) % 256, ((x + y) * (3 - i % 3)) % 256], -1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
        img = Image.fromarray(noisy)
        draw = ImageDraw.Draw(img)
        for _k in range(3 + i):
            x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
            draw.ellipse([x0, y0, x0 + 70, y0 + 70], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        p = folder / f"photo{i + 1}.png"
        img.save(p)
        paths.append(p)
    return paths


def small_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Path:
    """A small one-colour PNG file."""
    from PIL import Image

    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def as_the_app_stores_it(path: Path, processor):
    """The picture as the app keeps an upload (decoded, downscaled to what the model's processor
    uses), so that both sides of a comparison give the model the same pixels."""
    from llava_app.storage.images import ImageLimits, ModelImageSize, load_image_file

    return load_image_file(path, ImageLimits(model_size=ModelImageSize.from_processor(processor.image_processor)))


def prepare_models(*names: str) -> None:
    """Build the tiny models among ``names`` once, outside the timed parts."""
    from llava_app.engine.tiny.build import build_tiny_model
    from llava_app.engine.tiny.presets import is_tiny

    for name in set(names):
        if is_tiny(name):
            build_tiny_model(name)


# ----- the app, launched here -----------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched_app(config) -> Iterator[tuple[str, Any, Any]]:
    """The app as ``app.py`` builds it (create_app, build_demo, launch), served from this process on
    a free loopback port; yields ``(url, app, demo)`` and closes both afterwards."""
    import dataclasses

    from llava_app.application import create_app
    from llava_app.web.page.main import build_demo
    from llava_app.web.server import launch

    config = dataclasses.replace(config, host="127.0.0.1", port=free_port())
    app = create_app(config)
    demo = build_demo(app)
    launch(app, demo, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{config.port}/", app, demo
    finally:
        app.close()
        demo.close()


# ----- output -------------------------------------------------------------------------------------------
def write_json(path: str | Path, data: Any, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` (its folder made if needed); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=indent))
    return out
