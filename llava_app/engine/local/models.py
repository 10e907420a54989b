"""Model and processor loading (transformers, imported lazily by the local backend only)."""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_app.engine.tiny.presets import is_tiny
from llava_app.errors import ConfigError, MissingDependency, ModelNotFoundError, UserError
from llava_app.messages import Message

log = logging.getLogger(__name__)


def load_processor(path: str, **hub_kwargs):
    """``AutoProcessor.from_pretrained``, with torchvision-free fallbacks for OneVision and the Qwen-VL families."""
    from transformers import AutoConfig, AutoProcessor

    from llava_app.engine.local.processors import STOCK_PROCESSORS, make_image_only_onevision_processor

    config = AutoConfig.from_pretrained(path, **hub_kwargs)
    if config.model_type not in STOCK_PROCESSORS:
        return AutoProcessor.from_pretrained(path, **hub_kwargs)
    if not _has_torchvision():
        # The stock processor's video half needs torchvision: trying it would read the tokenizer (a second or
        # more for a 150k vocabulary) only to fail, and the fallback reads it again.
        log.info("loading the %s processor without video support (no torchvision)", config.model_type)
    else:
        try:
            return AutoProcessor.from_pretrained(path, **hub_kwargs)
        except (ImportError, AttributeError, OSError, ValueError, TypeError) as exc:
            log.info("loading the %s processor without video support (%s)", config.model_type, type(exc).__name__)
    if config.model_type != "llava_onevision":
        return _image_only_qwen_processor(path, STOCK_PROCESSORS[config.model_type], **hub_kwargs)
    from transformers import AutoTokenizer
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    image_processor = LlavaOnevisionImageProcessorPil.from_pretrained(path, **hub_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs)
    # Older processor configs store these; newer ones leave them to the model config.
    vc = config.vision_config
    extra: dict[str, Any] = {
        "num_image_tokens": (vc.image_size // vc.patch_size) ** 2,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "vision_aspect_ratio": config.vision_aspect_ratio,
    }
    cfg_file = _optional_file(path, "processor_config.json", **hub_kwargs)
    if cfg_file:
        saved = json.loads(Path(cfg_file).read_text())
        for key in ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio"):
            if key in saved:
                extra[key] = saved[key]
    chat_template = getattr(tokenizer, "chat_template", None)
    tmpl_file = _optional_file(path, "chat_template.jinja", **hub_kwargs)
    if tmpl_file:
        chat_template = Path(tmpl_file).read_text()
    return make_image_only_onevision_processor(image_processor, tokenizer, chat_template=chat_template, **extra)


def _has_torchvision() -> bool:
    """Whether torchvision can be imported (transformers' stock Qwen-VL and OneVision processors need it)."""
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def _chat_template(path: str, tokenizer, **hub_kwargs) -> str | None:
    """The checkpoint's chat template: ``chat_template.jinja``, ``chat_template.json``, else the tokenizer's."""
    for name in ("chat_template.jinja", "chat_template.json"):
        found = _optional_file(path, name, **hub_kwargs)
        if found:
            text = Path(found).read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return getattr(tokenizer, "chat_template", None)


def _image_only_qwen_processor(path: str, class_name: str, **hub_kwargs):
    """A Qwen-VL processor with transformers' PIL image processor (the default one imports torchvision)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from llava_app.engine.local.processors import make_image_only_processor

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **hub_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs)
    return make_image_only_processor(class_name, image_processor, tokenizer,
                                     chat_template=_chat_template(path, tokenizer, **hub_kwargs))


def _optional_file(path: str, filename: str, **hub_kwargs) -> str | None:
    """A checkpoint file's local path, or None when the checkpoint has no such file."""
    from transformers.utils import cached_file

    try:
        return cached_file(path, filename, **hub_kwargs)
    except OSError:
        return None


@dataclass(frozen=True)
class LoadOptions:
    """How to place the model: device, dtype, quantisation."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    load_in_4bit: bool = False
    load_in_8bit: bool = False


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when available, else the CPU; a device that is not here is a ``ConfigError``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError("config.device_name", device=device) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("config.no_cuda", device=device)
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError("config.cuda_index", device=device, count=count, last=count - 1)
    return device


def resolve_dtype(dtype: str, device: str):
    """Half precision on CUDA (bf16 where supported), float32 on the CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_skip_modules(model_type_or_config) -> list[str]:
    """Full module paths kept unquantised: vision tower, projector and lm_head (Qwen-VL: ``model.visual``, its
    merger included, and lm_head).

    Short names ("vision_tower") no longer match in current transformers, whose LLaVA
    classes nest the parts under ``model.``; the full paths do.
    """
    model_type = getattr(model_type_or_config, "model_type", model_type_or_config)
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        return ["model.visual", "lm_head"]
    return ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def quantization_config(options: LoadOptions):
    """A ``BitsAndBytesConfig`` for 4/8-bit, or None."""
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    if options.load_in_4bit and options.load_in_8bit:
        raise ConfigError("config.both_bits")
    import torch
    from transformers import BitsAndBytesConfig

    skip = quantization_skip_modules(None)
    if options.load_in_4bit:
        compute = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


# The oldest bitsandbytes that transformers' 4/8-bit loading accepts (its BITSANDBYTES_MIN_VERSION);
# llava_app/requirements-cuda.txt asks for the same.
BITSANDBYTES_MIN_VERSION = "0.46.1"
CUDA_REQUIREMENTS = "llava_app/requirements-cuda.txt"


def require_bitsandbytes() -> None:
    """4/8-bit loading needs bitsandbytes, an optional CUDA-only install: say what to install when it is missing."""
    from importlib import metadata, util

    from packaging.version import Version

    installed = None
    if util.find_spec("bitsandbytes") is not None:
        try:
            installed = metadata.version("bitsandbytes")
        except metadata.PackageNotFoundError:
            pass
    if installed is not None and Version(installed) >= Version(BITSANDBYTES_MIN_VERSION):
        return
    found = Message("config.not_installed") if installed is None else Message("config.installed", version=installed)
    raise MissingDependency("config.bitsandbytes", version=BITSANDBYTES_MIN_VERSION, found=found,
                            requirements=CUDA_REQUIREMENTS)


def model_load_kwargs(options: LoadOptions) -> dict[str, Any]:
    """The keyword arguments for ``from_pretrained``: dtype, device_map, quantisation."""
    device = resolve_device(options.device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(options.dtype, device)}
    if (options.load_in_4bit or options.load_in_8bit) and not device.startswith("cuda"):
        raise ConfigError("config.bits_cpu")
    quant = quantization_config(options)
    if quant is not None:
        require_bitsandbytes()
        kwargs["quantization_config"] = quant
    from llava_app.engine.hosting.spaces import on_zerogpu

    # ZeroGPU packs the weights that ``.to("cuda")`` placed at start-up and moves them to
    # the GPU it lends per call; accelerate's device_map would query a GPU that is not there yet.
    if device.startswith("cuda") and not on_zerogpu():
        kwargs["device_map"] = "auto" if device == "cuda" else {"": device}
    return kwargs


def _describe_missing(name: str, exc: Exception) -> Message:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        tried = Message("model.tried_offline")
    elif not _hub_reachable():
        tried = Message("model.tried_unreachable")
    else:
        tried = Message("model.tried_both")
    local = Path(name).expanduser()
    if local.exists():
        return Message("model.folder_failed", folder=str(local), kind=type(exc).__name__,
                       detail=(str(exc).splitlines() or [""])[0][:200])
    return Message("model.not_found", name=name, tried=tried)


@functools.lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the Hub endpoint, so an offline start fails in seconds, not minutes."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def hub_kwargs_for(name: str) -> dict[str, Any]:
    """``local_files_only`` when the model is cached (or the Hub is off or unreachable).

    Without this, a model that is not cached on a machine with no network makes the Hub
    client retry for minutes before it gives up.
    """
    from transformers import AutoConfig

    if Path(name).expanduser().exists():
        return {}
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        return {"local_files_only": True}
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _hub_reachable():
        return {"local_files_only": True}
    return {}


def load_model_and_processor(name: str, options: LoadOptions):
    """Load ``name`` (hub id, local folder or tiny preset) with ``AutoModelForImageTextToText``.

    Returns ``(model, processor, path)``. A model that cannot be found raises
    ``ModelNotFoundError`` with one line that says what was tried and what to do.
    """
    kwargs = model_load_kwargs(options)  # device and quantisation mistakes are told before any loading
    if is_tiny(name):
        from llava_app.engine.tiny.build import build_tiny_model

        path = str(build_tiny_model(name))
    else:
        path = os.path.expanduser(name)
    try:
        from transformers import AutoModelForImageTextToText

        hub = hub_kwargs_for(path)
        processor = load_processor(path, **hub)
        if "quantization_config" in kwargs:  # the family's own vision modules stay unquantised
            from transformers import AutoConfig

            skip = quantization_skip_modules(AutoConfig.from_pretrained(path, **hub))
            kwargs["quantization_config"].llm_int8_skip_modules = skip
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs, **hub)
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(_describe_missing(name, exc)) from exc
    model.eval()
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(resolve_device(options.device))
    from llava_app.engine.local.cpu_linears import install

    install(model)  # a decode step's few-row products on a CPU (cpu_linears.py); nothing elsewhere
    return model, processor, path
