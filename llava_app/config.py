"""App configuration: one frozen dataclass; CLI flags > environment variables > defaults."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "llava-hf/llava-interleave-qwen-0.5b-hf"
ENV_PREFIX = "LLAVA_APP_"


@dataclass(frozen=True)
class Config:
    """Everything the app needs to start; see ``parse_config`` for flags and variables."""

    model: str = DEFAULT_MODEL
    backend: str = "local"  # local | openai
    device: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_images: int = 6
    max_upload_mb: float = 20.0
    max_question_chars: int = 4000
    system_prompt: str = "You are a helpful assistant that answers questions about the user's images."
    temperature: float = 0.0
    top_p: float = 0.9
    max_new_tokens: int = 256
    max_new_tokens_limit: int = 2048
    stream_delay: float = 0.0  # seconds per streamed chunk; a test knob for the tiny model, 0 in production
    data_dir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "llava-app"))
    queue_size: int = 64
    max_images_per_message: int = 4
    session_ttl: float = 3600.0  # seconds idle before a conversation's server state is freed
    history: bool = True  # keep each browser's conversation across reloads
    history_db: str = ""  # "" = <data_dir>/history/conversations.sqlite3
    history_dir: str = ""  # "" = <data_dir>/history/images
    history_days: float = 7.0
    history_max_mb: float = 1024.0
    share_links: bool = False  # users may make read-only links to a snapshot of a conversation
    share_link_days: float = 7.0
    auth: str = ""  # user:password[,user2:password2]
    auth_file: str = ""
    context_length: int = 0  # 0: the model's own window; a smaller one for tests
    summarize_dropped: bool = False  # turns dropped to fit the window are replaced by a model-written summary
    base_url: str = ""
    api_key: str = ""
    request_timeout: float = 120.0
    openai_api: bool = False
    openai_api_key: str = ""
    openai_api_image_urls: bool = False
    openai_api_open: bool = False  # serve /v1 without credentials even when the page has a login
    image_urls: bool = False  # users may send http(s) URLs of pictures, videos and PDFs for the server to fetch
    image_url_allow: str = ""  # hosts exempt from the public-address check of fetched URLs
    image_url_timeout: float = 10.0
    video_frames: int = 4
    max_video_seconds: float = 300.0
    allowed_models: str = "presets"  # what the page's model picker may load; see catalog.allowed_models
    model_switching: str = "admins"  # off | admins | everyone: who may switch the model (it changes it for all)
    admins: str = ""  # comma-separated user names (of --auth) who may switch the model
    feedback_file: str = ""  # JSONL file for like/dislike; empty: feedback is off
    feedback_images: bool = False
    kv_cache_mb: float = 2048.0  # KV kept between turns, all sessions together; 0 re-reads every prompt
    feature_cache_mb: float = 512.0  # vision-tower outputs kept per image; 0 re-encodes images every turn
    max_batch: int = 0  # answers the local engine decodes together; 0: 8 on CUDA, 4 on the CPU
    engine_process: bool = False  # the local engine in a process of its own (engine/local/worker.py)
    grounding: str = ""  # how the model writes boxes (GROUNDING_FORMATS); "": from the model itself
    image_pixels: str = ""  # Qwen-VL: "MAX" or "MIN:MAX" pixels a picture is resized within; "": the checkpoint's

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


# name -> (help, extra argparse kwargs). Every field gets --kebab-name and LLAVA_APP_UPPER_NAME.
_HELP: dict[str, str] = {
    "model": "Hugging Face model id or local folder (e.g. llava-hf/llava-1.5-7b-hf); 'tiny-random' builds a "
    "tiny random-weight LLaVA offline (also tiny-random-llava-next, tiny-random-llava-onevision; "
    "tiny-faithful-llava, -llava-next, -llava-onevision, tiny-faithful-interleave: real tokenizers and templates)",
    "backend": "'local' runs the model in this process with transformers; 'openai' talks to an "
    "OpenAI-compatible server (vLLM, SGLang, TGI) at --base-url",
    "device": "auto (CUDA if available, else CPU), cpu, cuda or cuda:N",
    "dtype": "auto (bf16/fp16 on CUDA, float32 on CPU), float32, float16 or bfloat16",
    "load_in_4bit": "quantise the language model to 4 bit with bitsandbytes (CUDA only)",
    "load_in_8bit": "quantise the language model to 8 bit with bitsandbytes (CUDA only)",
    "host": "address to listen on (0.0.0.0 to serve the network)",
    "port": "port to listen on",
    "share": "create a public gradio.live link",
    "max_images": "most images in one conversation",
    "max_upload_mb": "largest upload accepted, in megabytes",
    "max_question_chars": "longest question accepted, in characters",
    "system_prompt": "default system prompt",
    "temperature": "default temperature (0 = greedy)",
    "top_p": "default nucleus sampling top-p",
    "max_new_tokens": "default answer length limit, in tokens",
    "max_new_tokens_limit": "the largest answer length a user may choose",
    "stream_delay": "seconds to wait between streamed chunks (test knob for watching streaming; keep 0)",
    "data_dir": "folder for uploaded images (normalised PNGs)",
    "queue_size": "most requests waiting in the queue; further ones are told the queue is full",
    "max_images_per_message": "most new images that go with one question",
    "session_ttl": "seconds a conversation may sit idle before the server frees its state, image files and "
    "model caches (a closed tab frees them at once; the browser's saved copy stays)",
    "history": "keep each browser's conversation across reloads and tabs (SQLite plus image files)",
    "history_db": "SQLite file for saved conversations (default <data-dir>/history/conversations.sqlite3)",
    "history_dir": "folder for saved conversations' images (default <data-dir>/history/images)",
    "history_days": "saved conversations unused this many days are deleted",
    "history_max_mb": "size cap of saved conversations (rows plus images); the oldest go first",
    "share_links": "let users share a read-only snapshot of the branch shown (images included) at an "
                   "unguessable URL that expires; the owner can revoke it. Anyone with the URL can read it, "
                   "without login",
    "share_link_days": "with --share-links: days a shared snapshot stays readable",
    "auth": "require login: user:password, several separated by commas (prefer --auth-file or the variable: "
    "flags show in the process list)",
    "auth_file": "require login: a file with one user:password per line (# starts a comment)",
    "context_length": "context window in tokens; 0 uses the model's own (with --backend openai: what the server "
                      "reports; given, it caps that)",
    "summarize_dropped": "when old turns no longer fit the context window, have the model write a short summary "
    "of them that stays in the prompt (one extra generation at each drop)",
    "base_url": "with --backend openai: the server's base URL, e.g. http://localhost:8000/v1",
    "api_key": "with --backend openai: the API key (or set LLAVA_APP_API_KEY)",
    "request_timeout": "with --backend openai: seconds to wait for the server to connect, or to send the next part "
    "of an answer, before giving up",
    "openai_api": "also serve an OpenAI-compatible API (/v1/models, /v1/chat/completions) on the same port, "
    "backed by this app's engine",
    "openai_api_key": "with --openai-api: a bearer token that lets /v1 clients in; with --auth/--auth-file the "
    "login's users (HTTP Basic) get in too; with neither, /v1 is open",
    "openai_api_image_urls": "with --openai-api: also accept http(s) image URLs, which this server then fetches "
    "(off: only data URLs, no server-side fetches)",
    "openai_api_open": "with --openai-api and a login (--auth/--auth-file): serve /v1 to anyone, without "
    "credentials (off: /v1 asks for --openai-api-key or a login user, like the page)",
    "image_urls": "let users send http(s) URLs of pictures, videos and PDFs (the /chat API's urls), which this "
    "server then fetches: only from public addresses (never loopback, private, link-local or other inner ones, "
    "checked at every redirect), within --max-upload-mb and --image-url-timeout",
    "image_url_allow": "comma-separated hosts whose URLs may be fetched although they resolve to an inner address "
    "(e.g. an intranet picture server; '*.example.com' for a domain and its subdomains); for --image-urls and "
    "--openai-api-image-urls",
    "image_url_timeout": "seconds one URL fetch may take in all, redirects included",
    "video_frames": "keyframes taken from a video, evenly spaced (a user may ask for up to "
    "--max-images-per-message); videos, like "
    "every upload, are at most --max-upload-mb",
    "max_video_seconds": "longest video accepted, in seconds",
    "allowed_models": "comma-separated models the page's picker may load (ids, local folders, tiny-random names); "
    "'presets' stands for the README's models table, '*' lets users type any id (the server then downloads it); "
    "the --model is always allowed; empty: no picker",
    "model_switching": "who may switch the model (which changes it for every user): 'off'; 'admins' (the "
    "default): only the --admins users, signed in with --auth or --auth-file, so nobody without a login; "
    "'everyone': every visitor (for a server of your own)",
    "admins": "comma-separated user names (from --auth or --auth-file) who may switch the model under "
    "--model-switching admins",
    "feedback_file": "append like/dislike on answers, with the conversation's text, to this JSONL file "
    "(off when empty)",
    "feedback_images": "with --feedback-file: also copy the conversation's images next to the file",
    "kv_cache_mb": "local backend: megabytes of conversation KV cache kept between turns across all sessions "
    "(least recently used sessions evicted first); 0 turns prefix reuse off",
    "max_batch": "local backend: most answers decoded together, one forward pass per step for all (0: 8 on CUDA, "
    "4 on the CPU; 1: one at a time); further ones wait in line and are shown their place. The running batch's KV "
    "comes out of --kv-cache-mb: a sequence joins only if it fits",
    "engine_process": "local backend: run the model in a process of its own, so the web server's Python never holds "
    "the interpreter lock the model's thread needs between its steps (recommended for several users at once; "
    "off: in the app's process)",
    "image_pixels": "local backend, models that read pictures at their own size (Qwen2.5-VL, Qwen3-VL): bound the "
    "pixels of each picture as MAX or MIN:MAX (e.g. 1003520 or 200704:1003520; a picture is resized within them "
    "before it is cut into patches, so fewer pixels mean fewer image tokens); empty: the checkpoint's own bounds",
    "grounding": "how the model writes boxes and points, for drawing them on its pictures and sending it regions: "
    "qwen2.5-vl (JSON bbox_2d in pixels of the resized picture), qwen3-vl (JSON bbox_2d, 0-1000), llava "
    "([x1, y1, x2, y2] fractions), or none; empty (the default): from the model's architecture, or for "
    "--backend openai its model id. Set it for a fine-tune whose name says nothing",
    "feature_cache_mb": "local backend: megabytes of image features (vision tower outputs) kept, so an image is "
    "encoded once per model; 0 turns the cache off",
}
SWITCHING_MODES = ("off", "admins", "everyone")
#: ``--grounding`` values (chat/grounding.py's ``CHOICES``; a test keeps the two the same)
GROUNDING_FORMATS = ("qwen2.5-vl", "qwen3-vl", "llava", "none")
_CHOICES = {"backend": ["local", "openai"], "model_switching": list(SWITCHING_MODES),
            "dtype": ["auto", "float32", "float16", "bfloat16"], "grounding": list(GROUNDING_FORMATS)}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def env_name(field_name: str) -> str:
    """The environment variable for a config field (``model`` -> ``LLAVA_APP_MODEL``)."""
    return ENV_PREFIX + field_name.upper()


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        raw = env.get(env_name(f.name))
        if raw is None:
            continue
        kind = type(getattr(Config(), f.name))
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise SystemExit(f"error: {env_name(f.name)}={raw!r} is not a valid {kind.__name__}: {exc}") from None
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; every flag has help text and an environment variable."""
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Chat with your photos: a multi-image, multi-turn LLaVA chat app.",
        epilog=f"Each flag can also be set by an environment variable {ENV_PREFIX}<FLAG> "
        f"(e.g. {ENV_PREFIX}MODEL, {ENV_PREFIX}LOAD_IN_4BIT=1). Flags win over variables.",
    )
    defaults = Config()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP[f.name]} [env {env_name(f.name)}; default {default!r}]"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=None, choices=_CHOICES.get(f.name), help=help_text)
    return parser


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the Config: CLI flags > environment variables > defaults.

    Args:
        argv: command-line arguments (without the program name); None reads sys.argv.
        env: environment mapping; None reads os.environ.

    Example:
        >>> parse_config(["--model", "tiny-random"], env={}).model
        'tiny-random'
    """
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values = _from_env(env)
    if "host" not in values and env.get("SPACE_ID"):
        values["host"] = "0.0.0.0"  # on Hugging Face Spaces the proxy must reach the app
    values.update({k: v for k, v in vars(args).items() if v is not None})
    config = Config(**values)
    validate(config)
    return config


def pixel_bounds(text: str) -> tuple[int | None, int | None]:
    """``--image-pixels`` as ``(min, max)`` (None: the checkpoint's); ``ValueError`` when it is not MAX or MIN:MAX."""
    text = text.strip().replace("_", "")
    if not text:
        return None, None
    low, sep, high = text.rpartition(":")
    bounds = (int(low) if sep else None, int(high))
    if bounds[1] < 1 or (bounds[0] is not None and not 1 <= bounds[0] <= bounds[1]):
        raise ValueError(text)
    return bounds


def validate(config: Config) -> None:
    """Refuse settings that cannot work, with one clear line."""
    problems = []
    if config.max_images < 1:
        problems.append("--max-images must be at least 1")
    if config.max_new_tokens < 1 or config.max_new_tokens > config.max_new_tokens_limit:
        problems.append("--max-new-tokens must be between 1 and --max-new-tokens-limit")
    if not 0.0 <= config.temperature <= 2.0:
        problems.append("--temperature must be between 0 and 2")
    if not 0.0 < config.top_p <= 1.0:
        problems.append("--top-p must be in (0, 1]")
    if config.context_length < 0:
        problems.append("--context-length must be 0 (the model's own) or a number of tokens")
    if config.max_batch < 0:
        problems.append("--max-batch must be 0 (sized to the device) or more")
    if config.kv_cache_mb < 0 or config.feature_cache_mb < 0:
        problems.append("--kv-cache-mb and --feature-cache-mb must be 0 or more")
    try:
        pixel_bounds(config.image_pixels)
    except ValueError:
        problems.append("--image-pixels must be MAX or MIN:MAX, whole numbers of pixels with MIN <= MAX")
    if config.load_in_4bit and config.load_in_8bit:
        problems.append("choose one of --load-in-4bit and --load-in-8bit")
    if config.request_timeout <= 0:
        problems.append("--request-timeout must be positive")
    if config.max_images_per_message < 1:
        problems.append("--max-images-per-message must be at least 1")
    if config.session_ttl <= 0:
        problems.append("--session-ttl must be positive")
    if config.share_link_days <= 0:
        problems.append("--share-link-days must be positive")
    if config.history_days <= 0 or config.history_max_mb <= 0:
        problems.append("--history-days and --history-max-mb must be positive")
    if config.backend == "openai" and not config.base_url:
        problems.append("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
    if config.openai_api_open and not config.openai_api:
        problems.append("--openai-api-open needs --openai-api")
    if config.openai_api_open and config.openai_api_key:
        problems.append("--openai-api-open serves /v1 without credentials: drop it or --openai-api-key")
    if config.video_frames < 1 or config.max_video_seconds <= 0:
        problems.append("--video-frames must be at least 1 and --max-video-seconds positive")
    if config.image_url_timeout <= 0:
        problems.append("--image-url-timeout must be positive")
    if config.model_switching not in SWITCHING_MODES:
        problems.append("--model-switching must be one of " + ", ".join(SWITCHING_MODES))
    if config.admins.strip() and not (config.auth or config.auth_file):
        problems.append("--admins names users of a login: add --auth or --auth-file")
    if config.grounding and config.grounding not in GROUNDING_FORMATS:
        problems.append("--grounding must be one of " + ", ".join(GROUNDING_FORMATS))
    if config.feedback_images and not config.feedback_file:
        problems.append("--feedback-images needs --feedback-file")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
