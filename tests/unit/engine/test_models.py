"""Model loading: placement, quantisation settings, tiny builders, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_FAMILIES

from llava_app.engine.local.models import (
    BITSANDBYTES_MIN_VERSION,
    CUDA_REQUIREMENTS,
    LoadOptions,
    model_load_kwargs,
    quantization_config,
    quantization_skip_modules,
)
from llava_app.errors import ConfigError, MissingDependency, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[3]


def test_cpu_loads_float32_without_device_map():
    import torch

    kwargs = model_load_kwargs(LoadOptions(device="cpu"))
    assert kwargs == {"dtype": torch.float32}


def test_quantisation_needs_cuda_and_says_so():
    with pytest.raises(ConfigError, match="CUDA") as err:
        model_load_kwargs(LoadOptions(device="cpu", load_in_4bit=True))
    assert not isinstance(err.value, ModelNotFoundError)
    with pytest.raises(ConfigError, match="not both"):
        quantization_config(LoadOptions(load_in_4bit=True, load_in_8bit=True))


def test_device_mistakes_are_config_errors_not_a_missing_model(monkeypatch, store):
    import torch

    from llava_app.engine.local.backend import LocalBackend

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available") as err:
            LocalBackend("tiny-random", store, device="cuda:0")
        assert not isinstance(err.value, ModelNotFoundError)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"cuda:3 .*1 CUDA device\(s\) \(cuda:0 to cuda:0\)"):
        model_load_kwargs(LoadOptions(device="cuda:3"))
    with pytest.raises(ConfigError, match="not a device name"):
        model_load_kwargs(LoadOptions(device="gpu"))


def test_an_unknown_backend_is_a_config_error(store):
    import dataclasses

    from llava_app.config import Config
    from llava_app.engine import make_backend

    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        make_backend(dataclasses.replace(Config(), backend="nope"), store)


def test_loading_a_model_does_not_import_the_tiny_builder_unless_it_builds():
    code = ("import sys, llava_app.engine.local.models, llava_app.engine.remote, llava_app.engine.local.backend; "
            "print('llava_app.engine.tiny.build' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("bits", [4, 8])
def test_quantisation_config_keeps_vision_projector_and_head_unquantised(bits):
    cfg = quantization_config(LoadOptions(load_in_4bit=bits == 4, load_in_8bit=bits == 8))
    assert cfg.load_in_4bit == (bits == 4) and cfg.load_in_8bit == (bits == 8)
    assert cfg.llm_int8_skip_modules == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def test_quantisation_without_bitsandbytes_is_one_line_that_says_what_to_install(monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without the package
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # reach the CUDA branch on a CPU-only machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.raises(MissingDependency) as err:
        model_load_kwargs(LoadOptions(device="cuda", load_in_8bit=True))
    message = str(err.value)
    assert f"pip install -r {CUDA_REQUIREMENTS}" in message and "not installed" in message and "\n" not in message


def test_the_cuda_requirements_ask_for_the_bitsandbytes_transformers_needs():
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION as transformers_floor

    assert BITSANDBYTES_MIN_VERSION == transformers_floor
    lines = (ROOT / CUDA_REQUIREMENTS).read_text().splitlines()
    assert f"bitsandbytes>={BITSANDBYTES_MIN_VERSION}" in lines
    # A CPU-only install never needs it: the app's own requirements leave it out.
    assert "bitsandbytes" not in "".join(line for line in (ROOT / "requirements.txt").read_text().splitlines()
                                         if not line.startswith("#"))


@pytest.mark.parametrize("preset", TINY_FAMILIES)
def test_skip_modules_are_full_paths_that_exist_in_each_family(preset, local_backend):
    model = local_backend(preset).model
    names = {name for name, _ in model.named_modules()}
    for path in quantization_skip_modules(model.config):
        assert path in names, f"{path} is not a module of {type(model).__name__}"
    # ...and the language model's layers are not covered by them (they do get quantised).
    import torch

    lm_linears = [n for n, m in model.named_modules() if n.startswith("model.language_model") and
                  isinstance(m, torch.nn.Linear)]  # on the CPU most are cpu_linears' FewRowsLinear
    assert lm_linears
    skip = quantization_skip_modules(model.config)
    assert not any(n.startswith(s) for n in lm_linears for s in skip)


@pytest.mark.parametrize("preset, family", [("tiny-random", "LlavaForConditionalGeneration"),
                                            ("tiny-random-llava-next", "LlavaNextForConditionalGeneration"),
                                            ("tiny-random-llava-onevision", "LlavaOnevisionForConditionalGeneration")])
def test_tiny_builders_make_each_family_through_the_auto_classes(preset, family, local_backend):
    backend = local_backend(preset)
    assert type(backend.model).__name__ == family
    assert sum(p.numel() for p in backend.model.parameters()) < 1_000_000
    assert backend.is_random
    # A word-level tokenizer: streamed output is readable words.
    words = backend.processor.tokenizer.decode(backend.processor.tokenizer("red cat on a table")["input_ids"])
    assert "red cat on a table" in words


def test_tiny_model_is_built_once(tiny_model_path):
    first = tiny_model_path("tiny-random")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path("tiny-random") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_local_folder_loads(tiny_model_path, store):
    from llava_app.engine.local.backend import LocalBackend

    backend = LocalBackend(str(tiny_model_path("tiny-random-llava-next")), store, device="cpu")
    assert type(backend.model).__name__ == "LlavaNextForConditionalGeneration"
    assert not backend.is_random  # a folder is a real model as far as the app knows


@pytest.mark.parametrize("torchvision", [False, True], ids=["without-torchvision", "with-torchvision"])
def test_a_stock_processor_is_tried_only_where_it_can_load(torchvision, tiny_model_path, monkeypatch):
    """OneVision's and Qwen-VL's stock processors need torchvision for their video half. Without it the
    image-only processor is made at once: the tokenizer (a second or more for Qwen's 150k vocabulary) is read
    once, not once for the stock processor that fails and again for ours."""
    from transformers import AutoProcessor, AutoTokenizer

    from llava_app.engine.local import models

    monkeypatch.setattr(models, "_has_torchvision", lambda: torchvision)
    calls: list[str] = []
    for cls in (AutoProcessor, AutoTokenizer):
        real = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, _real=real, _name=cls.__name__, **k:
                            calls.append(_name) or _real(*a, **k))
    processor = models.load_processor(str(tiny_model_path("tiny-random-llava-onevision")))
    assert type(processor).__name__ == "ImageOnlyLlavaOnevisionProcessor" and processor.tokenizer is not None
    assert calls.count("AutoProcessor") == (1 if torchvision else 0)
    if not torchvision:
        assert calls == ["AutoTokenizer"]


def test_unknown_model_is_one_clear_line(store, monkeypatch):
    from llava_app.engine.local.backend import LocalBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        LocalBackend("no-such-org/no-such-model", store, device="cpu")
    message = str(err.value)
    assert "no-such-org/no-such-model" in message and "tiny-random" in message and "\n" not in message


def start_app(argv: list[str], capfd) -> tuple[str, str]:
    """``app.py``'s ``main`` run here, as ``python app.py`` runs it: the line it exits with and what it wrote
    to stderr on the way (the same entry point; one real ``python app.py`` start-up error is checked in
    integration/test_remote_app.py)."""
    import app

    with pytest.raises(SystemExit) as stopped:
        app.main(argv)
    return str(stopped.value.code), capfd.readouterr().err


def test_app_start_up_with_a_missing_model_prints_one_line_and_no_traceback(tmp_path, capfd):
    line, err = start_app(["--model", "no-such-org/no-such-model", "--data-dir", str(tmp_path)], capfd)
    assert "Traceback" not in err and "\n" not in line
    assert line.startswith("error: Model 'no-such-org/no-such-model' was not found")


def test_app_start_up_on_a_missing_gpu_says_so_in_one_line(tmp_path, capfd):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line, err = start_app(["--model", "tiny-random", "--device", "cuda:0", "--data-dir", str(tmp_path)], capfd)
    assert "Traceback" not in err
    assert line == "error: --device cuda:0 was asked for, but no CUDA device is available; use --device cpu"
