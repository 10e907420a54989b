"""The models the page's picker offers, and the operator's allow-list (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llava_app.errors import UserError

if TYPE_CHECKING:
    from llava_app.config import Config

ANY_MODEL = "*"


@dataclass(frozen=True)
class Preset:
    """A model of the README's models table."""

    id: str
    note: str


# The README's models table, smallest first; 'presets' in --allowed-models stands for these.
PRESETS = (
    Preset("llava-hf/llava-interleave-qwen-0.5b-hf", "0.5B, multi-image interleaved; runs on a CPU"),
    Preset("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "0.5B OneVision; runs on a CPU"),
    Preset("llava-hf/llava-1.5-7b-hf", "7B; a 16 GB GPU, or 4-bit"),
    Preset("llava-hf/llava-v1.6-mistral-7b-hf", "7B LLaVA-NeXT, high resolution; a 24 GB GPU, or 4-bit"),
    Preset("Qwen/Qwen3-VL-2B-Instruct", "2B Qwen3-VL, pictures at their own size; a 8 GB GPU, slow on a CPU"),
    Preset("Qwen/Qwen2.5-VL-3B-Instruct", "3B Qwen2.5-VL, pictures at their own size; a 12 GB GPU, or 4-bit"),
    Preset("Qwen/Qwen2.5-VL-7B-Instruct", "7B Qwen2.5-VL; a 24 GB GPU, or 4-bit"),
    Preset("Qwen/Qwen3-VL-8B-Instruct", "8B Qwen3-VL; a 24 GB GPU, or 4-bit"),
)


def allowed_models(config: Config) -> list[str]:
    """The models users may switch to, in picker order; the startup model comes first.

    ``presets`` expands to ``PRESETS``; ``*`` is kept as a marker that any id is allowed.
    """
    names = [config.model]
    for item in config.allowed_models.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "presets":
            names.extend(p.id for p in PRESETS)
        else:
            names.append(item)
    return list(dict.fromkeys(names))


def any_model_allowed(allowed: list[str]) -> bool:
    """True when the operator lets users type any model id."""
    return ANY_MODEL in allowed


def check_allowed(name: str, allowed: list[str]) -> str:
    """The model name, stripped, when the allow-list permits it; a ``UserError`` otherwise."""
    name = (name or "").strip()
    if not name or name == ANY_MODEL:
        raise UserError("switch.choose")
    if name not in allowed and not any_model_allowed(allowed):
        raise UserError("switch.not_offered", name=name)
    return name


def choices(allowed: list[str]) -> list[str]:
    """What the picker lists (the ``*`` marker is not a model)."""
    return [name for name in allowed if name != ANY_MODEL]

