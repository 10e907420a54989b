"""The real checkpoints' tokenizers, offline: llama.cpp's vocabulary-only GGUF files, made to match.

transformers reads the GGUF files (``gguf_file=``, needs the ``gguf`` package); two details then differ
from the tokenizers the llava-hf checkpoints ship, and are put right here:

* Qwen2: llama.cpp pads the vocabulary to the model's 151,936 rows with ``[PAD151646]``... tokens, so
  an added ``<image>`` would land at 151,936. The checkpoints' tokenizer stops at ``<|im_end|>``
  (151,645) and adds ``<image>`` as 151,646 (and ``<video>`` as 151,647 for OneVision; see
  transformers' ``convert_llava_onevision_weights_to_hf.py``). Qwen2's tokenizer also normalises to
  NFC (transformers ``models/qwen2/tokenization_qwen2.py``).
* Llama: the llava-hf checkpoints use the legacy SentencePiece behaviour, which puts a "▁" before the
  text after every special token: transformers' ``tests/models/llava/test_processor_llava.py``
  (``test_chat_template_dict``) expects ``... 32000, 29871, 13, ...`` for ``"<image>\\n"`` with
  ``llava-hf/llava-1.5-7b-hf``. GGUF's conversion prepends only at the start ("first").
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

VOCAB_FILES = {"qwen2": "ggml-vocab-qwen2.gguf", "llama-spm": "ggml-vocab-llama-spm.gguf"}
QWEN2_BASE_SIZE = 151646  # <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, then the added tokens


def vocab_dirs() -> list[Path]:
    """Where the GGUF vocabularies are looked for, in order."""
    dirs = []
    if os.environ.get("LLAVA_APP_VOCAB_DIR"):
        dirs.append(Path(os.environ["LLAVA_APP_VOCAB_DIR"]))
    here = Path(__file__).resolve().parent
    dirs.append(here / "vocab")  # vendored with the package
    dirs.append(here.parents[3] / "shared" / "vocab")  # ../shared/vocab beside the checkout
    return dirs


def vocab_file(kind: str) -> Path | None:
    """The GGUF file for ``kind`` (``qwen2`` or ``llama-spm``), or None when none is usable.

    A file is usable when it is a real GGUF file (not a Git LFS pointer left by a shallow checkout).
    """
    for folder in vocab_dirs():
        path = folder / VOCAB_FILES[kind]
        try:
            with open(path, "rb") as f:
                if f.read(4) == b"GGUF":
                    return path
        except OSError:
            continue
    return None


def unavailable_reason(kind: str) -> str | None:
    """Why the real ``kind`` tokenizer cannot be built here, or None when it can."""
    if vocab_file(kind) is None:
        where = ", ".join(str(d) for d in vocab_dirs())
        return f"no {VOCAB_FILES[kind]} in {where}"
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "the gguf package is not installed (pip install gguf)"
    return None


@functools.lru_cache(maxsize=2)
def _gguf_json(kind: str, path: Path) -> str:
    """The tokenizer transformers makes of a GGUF vocabulary, serialised (reading the GGUF file takes seconds:
    the Qwen2 one is read once for every model built in a process)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).backend_tokenizer.to_str()


def _gguf_backend(kind: str):
    """The ``tokenizers.Tokenizer`` transformers makes of the GGUF vocabulary (a private copy)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_gguf_json(kind, vocab_file(kind)))


def _special(token: str):
    from tokenizers import AddedToken

    return AddedToken(token, special=True, normalized=False)


def qwen2_tokenizer(added: list[str], plain: list[str] = ()):
    """Qwen2's byte-level BPE tokenizer as the llava-hf Qwen2 checkpoints ship it, plus ``added`` specials and then
    ``plain`` added tokens that are not special (Qwen-VL's ``<tool_call>``, ...), each at the next id.

    eos is ``<|im_end|>`` and pad ``<|endoftext|>``, no bos (Qwen2-Instruct's tokenizer_config).
    """
    from tokenizers import Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    data = json.loads(_gguf_json("qwen2", vocab_file("qwen2")))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < QWEN2_BASE_SIZE]
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if v < QWEN2_BASE_SIZE}
    core = Tokenizer.from_str(json.dumps(data))
    core.normalizer = normalizers.NFC()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  clean_up_tokenization_spaces=False)
    tok.add_tokens([_special(t) for t in added], special_tokens=True)
    if plain:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    return tok


def llama_tokenizer(added: list[str], pad_token: str = "<unk>"):
    """Llama's SentencePiece tokenizer (legacy spacing, bos added) plus ``added`` specials (``<image>``: 32000)."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = _gguf_backend("llama-spm")
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  clean_up_tokenization_spaces=False)
    tok.add_tokens([_special(t) for t in added], special_tokens=True)
    tok.pad_token = pad_token
    return tok


def llama_cpp_vectors(kind: str = "qwen2") -> list[tuple[str, list[int]]]:
    """llama.cpp's test vectors for ``kind``: ``(text, expected ids)`` pairs."""
    path = vocab_file(kind)
    if path is None:
        return []
    inp, out = Path(f"{path}.inp"), Path(f"{path}.out")
    if not (inp.exists() and out.exists()):
        return []
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = out.read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids, strict=False)]
