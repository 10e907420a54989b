"""The app with --backend openai in front of a second app process serving --openai-api.

Both are real servers on loopback: the upstream is ``python app.py --model tiny-random
--openai-api`` in a subprocess (a real engine), the front is launched in this process
and driven through gradio_client, as a user's browser would drive it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
from conftest import free_port, launched_app
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[2]
STARTUP_LIMIT = 240  # seconds; importing torch and gradio on a busy 2-core machine is slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_APP_") or k == "LLAVA_APP_CACHE"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    return env


class Upstream:
    """``python app.py --model tiny-random --openai-api`` on a free port, in a subprocess."""

    def __init__(self, data_dir: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = data_dir / "upstream.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "app.py", "--model", "tiny-random", "--device", "cpu", "--openai-api",
               "--port", str(self.port), "--data-dir", str(data_dir), *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def wait_ready(self) -> Upstream:
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the upstream app exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            time.sleep(0.25)
        raise RuntimeError(f"the upstream app did not start in {STARTUP_LIMIT} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory, tiny_cache):
    """The upstream app the module's tests chat with; the module's last test kills it mid-answer."""
    ups = SimpleNamespace(main=Upstream(tmp_path_factory.mktemp("up-main"), "--stream-delay", "0.02"))
    try:
        ups.main.wait_ready()
        yield ups
    finally:
        ups.main.stop()


def front_config(tmp_path, base_url: str, **kwargs):
    from llava_app.config import Config

    kwargs.setdefault("max_new_tokens", 16)
    return Config(model="tiny-random", backend="openai", base_url=base_url, data_dir=str(tmp_path / "front"), **kwargs)


def _wait_for_growth(job, n: int = 3, limit: float = 60) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while len(seen) < n and time.monotonic() < deadline:
        out = job.outputs()
        if out and (not seen or out[-1] != seen[-1]):
            seen.append(out[-1])
        time.sleep(0.05)
    assert len(seen) >= n, "the answer did not stream"
    return seen


def test_multi_image_multi_turn_chat_through_the_remote_backend(upstreams, tmp_path, image_files, local_backend):
    from llava_app.chat.conversation import Conversation
    from llava_app.storage.images import load_image_file

    with launched_app(front_config(tmp_path, upstreams.main.url)) as (url, _, _):
        client = Client(url, verbose=False)
        first = client.predict("Compare Image 1 and Image 2", [handle_file(str(p)) for p in image_files[:2]],
                               api_name="/chat")
        second = client.predict("Which one is brighter?", [], api_name="/chat")
        third = client.predict("And what about Image 3?", [handle_file(str(image_files[2]))], api_name="/chat")
        assert first.strip() and second.strip() and third.strip()
        ctx = client.predict(api_name="/context")
    assert [im["label"] for im in ctx["images"]] == ["Image 1", "Image 2", "Image 3"]
    assert ctx["prompt_images"] == 3 and ctx["prompt_image_labels"] == ["Image 1", "Image 2", "Image 3"]
    assert [t["assistant"] for t in ctx["turns"]] == [first, second, third]

    # The upstream engine saw exactly the prompt the local engine builds for this conversation:
    # same labels, same image places, same turns (its token count says so).
    engine = local_backend("tiny-random")
    conv = Conversation()
    joins = {0: image_files[:2], 2: image_files[2:]}
    for i, turn in enumerate(ctx["turns"]):
        for p in joins.get(i, []):
            s = engine.images.put(load_image_file(p))
            conv.add_image(s.sha256, s.path, s.width, s.height)
        conv.ask(turn["user"])
        if i < 2:
            conv.answer(turn["assistant"])
    from llava_app.config import Config

    assert ctx["prompt_tokens"] == engine.prompt_info(conv.messages(Config().system_prompt)).n_tokens


def test_stop_mid_stream_frees_the_upstream_engine(upstreams, tmp_path, image_files):
    with launched_app(front_config(tmp_path, upstreams.main.url, max_new_tokens=2000)) as (url, _, _):
        client = Client(url, verbose=False)
        job = client.submit("Tell me a long story about Image 1", [handle_file(str(image_files[0]))],
                            api_name="/chat")
        seen = _wait_for_growth(job)
        assert all(seen[i + 1].startswith(seen[i].rstrip()) for i in range(len(seen) - 1))
        job.cancel()
        # The upstream was told: its single engine takes the next request at once
        # (the abandoned answer had ~1900 tokens, about 40 s, to go).
        direct = openai.OpenAI(base_url=upstreams.main.url, api_key="-", max_retries=0, timeout=60)
        started = time.monotonic()
        reply = direct.chat.completions.create(model="tiny-random", max_tokens=2,
                                               messages=[{"role": "user", "content": "quick one"}])
        waited = time.monotonic() - started
        assert reply.choices[0].message.content.strip()
        assert waited < 8, f"the upstream was still busy {waited:.1f} s after Stop"
        ctx = client.predict(api_name="/context")
        assert ctx["turns"][0]["stopped"] is True and ctx["turns"][0]["assistant"].strip()


def test_a_remote_only_app_imports_neither_torch_nor_transformers_and_gradio_reads_no_stubs(upstreams, tmp_path):
    """A remote-only start, in a fresh interpreter: no torch, no transformers, and Gradio imported without
    rewriting its components' type stubs (web/gradio_compat.no_stubs_at_import; the files it opens are seen
    through an audit hook)."""
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: e == 'open' and isinstance(a[0], str) and opened.append(a[0]))\n"
        "import llava_app.chat.conversation, llava_app.chat.service, llava_app.storage.images, llava_app.engine\n"
        "from llava_app.config import parse_config\n"
        "from llava_app.application import create_app\n"
        "from llava_app.web.page.main import build_demo\n"
        "from llava_app.web.server import launch_kwargs\n"
        f"config = parse_config(['--backend', 'openai', '--base-url', {upstreams.main.url!r}, '--model', "
        f"'tiny-random', '--data-dir', {str(tmp_path)!r}, '--openai-api'])\n"
        "app = create_app(config)\n"
        "build_demo(app)\n"
        "launch_kwargs(app)\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
        "print('STUBS', sorted({p for p in opened if p.endswith('.pyi') and '/gradio/' in p}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout
    assert "STUBS []" in out.stdout, out.stdout[-2000:]


def test_the_app_refuses_to_start_without_its_server_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "app.py", "--backend", "openai", "--model", "tiny-random",
                          "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--data-dir", str(tmp_path)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: Cannot reach the model server at http://127.0.0.1:")


def test_upstream_killed_mid_answer_keeps_the_part_that_arrived(upstreams, tmp_path, image_files):
    """Last in the module: it kills the upstream the others use."""
    with launched_app(front_config(tmp_path, upstreams.main.url, max_new_tokens=2000)) as (url, _, _):
        client = Client(url, verbose=False)
        job = client.submit("Tell me a long story about Image 1", [handle_file(str(image_files[0]))],
                            api_name="/chat")
        _wait_for_growth(job)
        upstreams.main.proc.kill()
        with pytest.raises(Exception, match="cut off.*part that arrived is kept"):
            job.result(timeout=30)
        ctx = client.predict(api_name="/context")
        (turn,) = ctx["turns"]
        assert turn["assistant"].strip() and turn["stopped"] is False and turn["cut"] == "server"
        # The server is gone now: the next question says so, and the conversation stays as it was.
        with pytest.raises(Exception, match="Cannot reach the model server"):
            client.predict("Are you there?", [], api_name="/chat")
        ctx = client.predict(api_name="/context")
        assert len(ctx["turns"]) == 1 and ctx["image_count"] == 1
