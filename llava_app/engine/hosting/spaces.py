"""Hugging Face Spaces: finding the ``spaces`` package and sizing ZeroGPU requests (no torch here)."""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# ZeroGPU asks each GPU call for a duration up front: too short and the call is cut
# off, too long and it waits longer in the queue and spends more of the user's quota.
# The figures fit a 7B model in bf16 on ZeroGPU's GPU (about 20 tokens per second with
# transformers' generate) with room to spare; the 0.5B models are several times faster.
GPU_BASE_SECONDS = 10.0  # moving the weights in, the prefill of the text
GPU_SECONDS_PER_IMAGE = 2.0  # vision tower and the image tokens' prefill
GPU_SECONDS_PER_TOKEN = 0.05
GPU_MIN_SECONDS = 15
GPU_MAX_SECONDS = 120  # a longer request is refused to users without a PRO account


def load_spaces() -> ModuleType | None:
    """The ``spaces`` package when it is installed (it is on every Space), else None.

    It must be imported before torch touches CUDA, so the backend asks for it before
    loading the model.
    """
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def on_zerogpu(env: Any = None) -> bool:
    """True on a ZeroGPU Space (the GPU is lent per call; models are loaded before the first)."""
    env = os.environ if env is None else env
    return str(env.get("SPACES_ZERO_GPU", "")).lower() in ("1", "t", "true")


def gpu_seconds(max_new_tokens: int, n_images: int) -> int:
    """The GPU time to ask ZeroGPU for one answer of at most ``max_new_tokens`` tokens."""
    seconds = GPU_BASE_SECONDS + GPU_SECONDS_PER_IMAGE * n_images + GPU_SECONDS_PER_TOKEN * max_new_tokens
    return int(min(GPU_MAX_SECONDS, max(GPU_MIN_SECONDS, round(seconds))))
