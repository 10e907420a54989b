"""Shared fixtures: tiny models built once per run, images made in memory, a launched app."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from browser_tabs import Tabs
from client_streams import keep_answers_joined_as_the_stream_closes
from PIL import Image

# Tests never reach the Hugging Face Hub (there is no network here, and a test must not
# depend on one). Set before anything imports huggingface_hub, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# One torch thread per test process (and the servers and engine processes they start): the suite runs in
# several processes on two cores, where a second thread each only spins waiting for the other (measured:
# the engine tests took 22% less CPU time, and no longer, with one). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Python's bytecode cache on, for the test processes and what they start (app.py, engine processes), whatever
# PYTHONDONTWRITEBYTECODE the shell has (this machine's image sets it): without the cache every test process
# compiles llava_app and the tests again, and pytest rewrites every test module's asserts again. Measured: test
# collection in one process took 6.1-6.7 CPU-s without it, 3.8-4.0 with. The files go to __pycache__ folders
# (in .gitignore) as a plain Python run writes them.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import llava_app.web  # noqa: E402,F401  before any test module imports gradio: its stub rewriting is left out, as in the app


def _one_ssl_context_per_process() -> None:
    """httpx builds a new SSL context, loading the system's certificate bundle, for every client it makes: about
    40 ms of CPU each. gradio_client makes a client for every request and every event stream, and the tests'
    ``httpx.get`` polls make one per poll, so a run made thousands of them (about 7 % of the suite's CPU,
    measured machine-wide). Here the context for the default settings (certificates checked, the environment's
    bundle) is built once per test process and reused; any other setting is built as httpx builds it. Nothing
    in the tests uses TLS (every server is plain HTTP on loopback), and no check changes."""
    import functools

    try:
        import httpx._transports.default as transports

        build = transports.create_ssl_context
    except (ImportError, AttributeError):  # another httpx layout: each client builds its own, as before
        return
    if getattr(build, "shared_default", False):  # conftest imported a second time (``from conftest import``)
        return

    @functools.cache
    def default_context(cafile: str | None, capath: str | None):
        return build(True, None, True)

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is True and cert is None and trust_env is True:
            return default_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return build(verify, cert, trust_env)

    create_ssl_context.shared_default = True
    transports.create_ssl_context = create_ssl_context


_one_ssl_context_per_process()
keep_answers_joined_as_the_stream_closes()


# Python's cyclic garbage collector, in a test process: after the imports a process holds half a million
# objects (torch, transformers, gradio), and every full collection walks them all (about 0.3 CPU-s each
# here). With the default thresholds a test process ran about 35 of them in its share of a run; with a
# larger young generation, and the objects that exist once the tests are collected set aside for good
# (``gc.freeze``: still freed when their last reference goes, only never walked), the collector's time in
# the unit tests fell from 36 to 13 CPU-s, measured with gc.callbacks. Explicit ``gc.collect()`` calls (the
# memory tests) collect as before.
def pytest_configure(config):
    gc.set_threshold(20_000, 20, 20)


def pytest_collection_finish(session):
    gc.freeze()


TINY_FAMILIES = ["tiny-random", "tiny-random-llava-next", "tiny-random-llava-onevision"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No LLAVA_APP_* setting from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("LLAVA_APP_") and key != "LLAVA_APP_CACHE":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")


def _builders_digest() -> str:
    """A digest of the code that builds the tiny models (and the vocabularies they read): a change to any
    of it builds them anew, so a cache kept across runs never serves a model of an older recipe."""
    import hashlib

    engine = Path(__file__).resolve().parents[1] / "llava_app" / "engine"
    digest = hashlib.sha256()
    for path in sorted(engine.rglob("*")):
        rel = path.relative_to(engine)
        if path.is_file() and path.suffix != ".pyc" and any(
                key in part for part in rel.parts for key in ("tiny", "faithful", "vocab", "tokenizer")):
            digest.update(rel.as_posix().encode())
            digest.update(path.read_bytes())
    import transformers

    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """Tiny models are built once and kept across runs (LLAVA_APP_CACHE, or ~/.cache/llava-app-tests/<digest
    of their recipe>); the builder writes each into a temporary folder and renames it, so test processes
    running side by side (pytest-xdist) never see half a model."""
    root = os.environ.get("LLAVA_APP_CACHE")
    if not root:
        root = os.path.join(os.path.expanduser("~"), ".cache", "llava-app-tests", _builders_digest())
    path = Path(root) / "tiny-models"
    os.environ["LLAVA_APP_CACHE"] = str(path.parent)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tiny_cache):
    """``tiny_model_path(preset)``: the folder of a built tiny model."""
    from llava_app.engine.tiny.build import build_tiny_model

    def build(preset: str = "tiny-random", context_length: int | None = None) -> Path:
        return build_tiny_model(preset, cache_dir=tiny_cache, context_length=context_length)

    return build


def make_image(color="red", size=(64, 48), fmt="PNG", **save_kwargs) -> bytes:
    """A small image file's bytes, made in memory."""
    img = Image.new("RGB", size, color)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def attach_file(conv, store, path):
    """Store an image file as an upload is stored and add it to ``conv``; returns its ImageRef."""
    from llava_app.storage.images import load_image_file

    stored = store.put(load_image_file(path))
    return conv.add_image(stored.sha256, stored.path, stored.width, stored.height, Path(path).name)[0]


@pytest.fixture
def photos(tmp_path):
    """Four pictures of different shapes (LLaVA-NeXT/OneVision give them different token counts),
    new to every test: no other test (they share engines) has their features cached."""
    import random

    from PIL import Image

    rng = random.Random(uuid.uuid4().int)
    paths = []
    for i, size in enumerate([(64, 48), (40, 90), (80, 80), (120, 30)], start=1):
        img = Image.new("RGB", size)
        img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
        p = tmp_path / f"p{i}.png"
        img.save(p)
        paths.append(p)
    return paths


@pytest.fixture
def image_files(tmp_path) -> list[Path]:
    """Three distinct small PNG files on disk."""
    paths = []
    for i, (color, size) in enumerate([("red", (64, 48)), ("blue", (40, 90)), ("green", (80, 80))], start=1):
        p = tmp_path / f"photo{i}.png"
        p.write_bytes(make_image(color, size))
        paths.append(p)
    return paths


@pytest.fixture
def store(tmp_path):
    from llava_app.storage.images import ImageStore

    return ImageStore(tmp_path / "images")


_BACKENDS: dict[tuple, object] = {}


@pytest.fixture(scope="session")
def backend_images(tmp_path_factory) -> Path:
    """The image folder of the shared tiny-model backends (an engine process given it opens the same files)."""
    return tmp_path_factory.mktemp("backend-images")


@pytest.fixture(scope="session")
def local_backend(tiny_cache, backend_images):
    """``local_backend(preset, **kwargs)``: a LocalBackend on a tiny model, shared per session."""
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.storage.images import ImageStore

    store_root = backend_images

    def get(preset: str = "tiny-random", **kwargs):
        key = (preset, tuple(sorted(kwargs.items())))
        if key not in _BACKENDS:
            _BACKENDS[key] = LocalBackend(preset, ImageStore(store_root), device="cpu", **kwargs)
        return _BACKENDS[key]

    return get


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(files: dict[str, tuple[str, bytes]]) -> Iterator[str]:
    """A plain HTTP server on loopback answering GET ``path`` with ``files[path]`` (content type, body) and
    404 for anything else; yields its address (``http://127.0.0.1:PORT``, no trailing slash)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Files(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            kind, body = files.get(self.path, ("text/plain", b""))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Launched(NamedTuple):
    """A running app: its URL (with a trailing slash), its parts, and the Gradio page."""

    url: str
    app: Any  # llava_app.application.App
    demo: Any  # gradio.Blocks


@contextlib.contextmanager
def launched_app(config, backend=None, port: int | None = None) -> Iterator[Launched]:
    """Launch the real app (create_app, build_demo, launch) on a free loopback port (or ``port``).

    The one way the tests start a server. A shared test ``backend`` (a tiny model loaded once
    per run) reads this app's images while it serves.
    """
    from llava_app.application import create_app
    from llava_app.storage.images import ImageStore
    from llava_app.web.page.main import build_demo
    from llava_app.web.server import launch

    config = dataclasses.replace(config, host="127.0.0.1", port=port or free_port())
    store = ImageStore(os.path.join(config.data_dir, "images"))
    engine = getattr(backend, "engine", backend)  # a wrapper holds the engine that reads images
    shared_store = getattr(engine, "images", None)
    if shared_store is not None:
        engine.images = store
    app = create_app(config, backend=backend, store=store)
    demo = build_demo(app)
    launch(app, demo, prevent_thread_lock=True, quiet=True)
    _SERVING.append((app, demo))
    try:
        yield Launched(f"http://127.0.0.1:{config.port}/", app, demo)
    finally:
        _SERVING.remove((app, demo))
        app.close()
        demo.close()
        if shared_store is not None:
            engine.images = shared_store


@pytest.fixture
def app_config(tmp_path, tiny_cache):
    """A Config for the tiny model with its own data folder."""
    from llava_app.config import Config

    return Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "data"), max_new_tokens=24)


# ----- a real browser ---------------------------------------------------------------------------
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # a camera for the page's camera tests: Chromium's own test pattern, allowed without asking
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def find_chromium() -> str | None:
    """Debian's Chromium (or ``CHROMIUM_PATH``); Playwright's own browser download is not used."""
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _no_browser(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run; .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (each test opens its own context: cookies and storage apart),
    as ``browser_tabs.Tabs``: a closed context's tab goes to the next test of the module that asks for the
    same options, made new (see there); missing: skipped here, a failure under CI=true. Not one per process:
    Playwright's sync API keeps an event loop running in the thread while it is open, and a later test's
    ``asyncio.run`` would find it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is missing: pip install -r tests/requirements.txt")
    path = find_chromium()
    if path is None:
        _no_browser("no Chromium found: install it with `apt-get install chromium` (or set CHROMIUM_PATH)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        tabs = Tabs(chromium)
        yield tabs
        tabs.close()
        chromium.close()


# ----- the page is ready: its load events have answered ------------------------------------------
# Added to a page before it opens (``watch_gradio``): counts the page's direct calls to the server
# (``/run/predict``: the load events, settings changes) and notes which functions have answered.
GRADIO_WATCH = """(() => {
  const seen = window.__gradioCalls = {made: 0, inflight: 0, answered: new Set(), joins: []};
  const fetch = window.fetch;
  window.fetch = async function (input, init) {
    const url = String(typeof input === 'string' ? input : (input && input.url) || '');
    if (url.includes('/queue/join') && init && typeof init.body === 'string') {  // the last few, for a report
      const join = {fn: null, at: Math.round(performance.now()), status: 'sent'};
      try { join.fn = JSON.parse(init.body).fn_index; } catch (e) { join.fn = '?'; }
      seen.joins = [...seen.joins.slice(-5), join];
      const response = fetch.apply(this, arguments);
      response.then(r => { join.status = r.status; }, e => { join.status = String(e); });
      return response;
    }
    let fn = null;
    if (url.includes('/run/predict') && init && typeof init.body === 'string') {
      try { fn = JSON.parse(init.body).fn_index; } catch (e) { fn = null; }
    }
    if (fn === null || fn === undefined) return fetch.apply(this, arguments);
    seen.made++;
    seen.inflight++;
    const done = () => setTimeout(() => { seen.inflight--; seen.answered.add(fn); }, 0);  // after Gradio applies it
    try {
      const response = await fetch.apply(this, arguments);
      response.clone().text().then(done, done);
      return response;
    } catch (error) { done(); throw error; }
  };
})()"""

# Every page-load event that calls the server directly has answered, and no direct call is in flight.
PAGE_LOADED = """() => {
  const config = window.gradio_config, seen = window.__gradioCalls;
  if (!config || !config.dependencies || !seen) return false;
  const loads = config.dependencies.filter(d => d.queue === false && d.targets.some(t => t[1] === 'load'));
  return loads.length > 0 && loads.every(d => seen.answered.has(d.id)) && seen.inflight === 0;
}"""


def watch_gradio(page) -> None:
    """Before ``page.goto``: let ``wait_page_loaded`` and ``wait_calls_answered`` see the page's calls."""
    page.add_init_script(GRADIO_WATCH)


def wait_page_loaded(page, timeout: float = 90_000) -> None:
    """The page's load events have all answered (Gradio builds the page before they do; a click or an
    edit before then can be overwritten by their results, or act on state they have not set yet)."""
    page.wait_for_function(PAGE_LOADED, timeout=timeout)


def ask_and_wait(page, text: str, timeout: float = 90_000) -> None:
    """Send a question from the page and wait until its answer (and its footer) is written out; when it does
    not come, say what the page showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = page.locator("#chatbot .answer-footer").count()
    page.fill("#question textarea", text)
    page.click("#send")
    try:
        page.wait_for_function("(n) => document.querySelectorAll('#chatbot .answer-footer').length > n "
                               "&& !document.querySelector('#send').disabled", arg=before, timeout=timeout)
    except PlaywrightTimeout as exc:
        raise AssertionError(f"no answer to {text!r} within {timeout / 1000:.0f} s; the page showed:\n"
                             f"{page.evaluate(PAGE_STATE)}\n{app_threads()}") from exc


#: the apps ``launched_app`` is serving now, for a failure message when the page waits on the server
_SERVING: list = []


def app_threads(limit: int = 8000) -> str:
    """Where this process's threads that run the app's or Gradio's code are now (the launched app runs in the
    test's process), and what each serving app's Gradio queue holds: for a failure message when the page waits
    on the server (an answer that never comes: never started, still running, or finished unheard)."""
    import sys
    import threading
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack if "llava_app" in f.filename or "/gradio/" in f.filename]
        if ours:
            out.append(f"--- thread {names.get(ident, ident)}:\n" + "".join(traceback.format_list(ours[-5:])))
    threads = ("threads in the app's or Gradio's code:\n" + "".join(out)) if out else "no thread in that code"
    return (queue_state() + "\n" + threads)[:limit]


def queue_state() -> str:
    """Each serving app's Gradio queue: events waiting per concurrency group, jobs running, messages not yet
    sent to each session's stream, and the conversations' last turns as the server holds them."""
    lines = []
    for app, demo in list(_SERVING):
        queue = getattr(demo, "_queue", None)
        if queue is None:
            continue
        name = lambda event: getattr(event.fn, "name", "?")  # noqa: E731
        waiting = {cid: [name(e) for e in q.queue] + [f"running {q.current_concurrency}/{q.concurrency_limit}"]
                   for cid, q in queue.event_queue_per_concurrency_id.items() if q.queue or q.current_concurrency}
        running = [[name(e) for e in job] for job in queue.active_jobs if job]
        unsent = {s[:6]: q.qsize() for s, q in queue.pending_messages_per_session.items() if q.qsize()}
        lines.append(f"queue: waiting {waiting}; running {running}; unsent messages {unsent}; "
                     f"events open {len(queue.event_ids_to_events)}")
        for conv in list(app.service.sessions._convs.values())[-3:]:
            turns = conv.turns
            last = turns[-1] if turns else None
            lines.append(f"conversation {conv.id[:6]}: {len(turns)} turns; last {last and last.user!r} -> "
                         f"{last and last.assistant[:60]!r}")
    return "\n".join(lines) or "no app serving"


#: what a page shows, for a test's failure message: the chat, the notice, toasts, the box, the strip, Send
PAGE_STATE = """() => {
  const text = sel => [...document.querySelectorAll(sel)].map(e => e.innerText.trim()).join(' | ');
  const send = document.querySelector('#send'), box = document.querySelector('#question textarea');
  return ['chat: ' + text('#chatbot .message'), 'notice: ' + text('#notice'), 'toasts: ' + text('.toast-body'),
          'box: ' + (box && box.value), 'strip: ' + text('#gallery .caption-label'),
          'send enabled: ' + (send && !send.disabled), 'calls: ' + JSON.stringify(window.__gradioCalls &&
          {made: window.__gradioCalls.made, inflight: window.__gradioCalls.inflight,
           joins: window.__gradioCalls.joins, now: Math.round(performance.now())})].join('\\n'); }"""


def calls_made(page) -> int:
    """How many direct calls the page has made to the server so far (a mark for ``wait_calls_answered``)."""
    return page.evaluate("() => window.__gradioCalls.made")


def wait_calls_answered(page, since: int, timeout: float = 90_000) -> None:
    """The page has called the server since mark ``since`` (``calls_made``; a settings change, say), and no
    direct call of it is still waiting for its answer."""
    page.wait_for_function("(since) => window.__gradioCalls.made > since && window.__gradioCalls.inflight === 0",
                           arg=since, timeout=timeout)


# ----- the order the test processes take the modules in ------------------------------------------------
#: The modules that take longest (a minute or more of a test process each, mostly waiting on servers started
#: in subprocesses, browsers and streams), started first: pytest-xdist hands each module to the next free
#: process in collection order, so one of these taken last would run alone at the end of the run. Among them,
#: test_batching (half a minute, mostly waiting on answers slowed step by step with ``stream_delay``): taken
#: with the short modules at the end, where nothing else was left to use the cores, a quarter of both cores sat
#: idle for its last 25 s.
LONG_MODULES = [
    "integration/test_benchmarks.py", "browser/test_interrupted_browser.py", "integration/test_shared_data_dir.py",
    "browser/test_browser.py", "integration/test_remote_app.py", "browser/test_page_browser.py",
    "browser/test_branches_browser.py", "unit/engine/test_worker.py", "integration/test_faults.py",
    "unit/engine/test_batching.py",
    "unit/engine/test_faithful.py", "unit/engine/test_qwen_vl.py", "browser/test_features_browser.py",
    "browser/test_preferences_browser.py",
    "browser/test_reload_browser.py", "integration/test_api.py", "integration/test_load.py",
    "integration/test_llama_server.py",
]


def pytest_collection_modifyitems(config, items):
    """Long modules first (``LONG_MODULES``, in that order), each module's tests kept in their own order."""
    rank = {name: i for i, name in enumerate(LONG_MODULES)}

    def key(item) -> int:
        path = Path(str(item.fspath)).as_posix()
        return next((i for name, i in rank.items() if path.endswith("tests/" + name)), len(rank))

    items[:] = sorted(items, key=key)  # sorted() is stable: the rest stay in collection order
