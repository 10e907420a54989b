"""Helpers for the tests of the faithful tiny models: forcing answers, byte-split text, reference prompts."""

from __future__ import annotations

from llava_app.engine.local.token_record import byte_decoder

FAITHFUL = ["tiny-faithful-llava", "tiny-faithful-llava-next", "tiny-faithful-llava-onevision",
            "tiny-faithful-interleave"]
SYSTEM = "Answer briefly."
#: an answer of ASCII, Chinese and an emoji; written one byte per token it splits every multi-byte character
MIXED = " Hello world, 你好 😀!"


def _byte_chars() -> dict[int, str]:
    """GPT-2 / Qwen2 byte-level BPE: the printable character that stands for each byte (the engine's table)."""
    return {b: c for c, b in byte_decoder().items()}


def byte_ids(tokenizer, text: str) -> list[int]:
    """``text`` as one token per UTF-8 byte (SentencePiece byte fallback or byte-level BPE)."""
    vocab = tokenizer.get_vocab()
    ids = []
    for b in text.encode("utf-8"):
        piece = f"<0x{b:02X}>"
        ids.append(vocab[piece] if piece in vocab else vocab[_byte_chars()[b]])
    return ids


def force_answers(backend, monkeypatch, answers: list[list[int] | None]) -> None:
    """Make the next generations write these ids (None: let the model choose), through the real engine."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    queue = list(answers)
    original = backend.generation_kwargs

    class Force(LogitsProcessor):
        def __init__(self, ids):
            self.ids, self.start = ids, None

        def __call__(self, input_ids, scores):
            if self.start is None:
                self.start = input_ids.shape[1]
            step = input_ids.shape[1] - self.start
            if step < len(self.ids):
                scores = torch.full_like(scores, float("-inf"))
                scores[:, self.ids[step]] = 0.0
            return scores

    def kwargs(request):
        out = original(request)
        ids = queue.pop(0) if queue else None
        if ids is not None:
            out["logits_processor"] = LogitsProcessorList([Force(ids)])
        return out

    monkeypatch.setattr(backend, "generation_kwargs", kwargs)


def documented_prompt(preset: str, a1: str, a2: str) -> str:
    """The fixed conversation of test_faithful, written out in each checkpoint's documented format.

    Turn 1: Image 1 and Image 2 with a question; turn 2: text only; turn 3: Image 3 added mid-chat.
    Vicuna (llava-1.5, llava-v1.6-vicuna): "USER: <image>\\n<prompt> ASSISTANT:" (transformers'
    test_processor_llava.py, test_processor_llava_next.py), the system prompt as bare text. ChatML
    (OneVision: convert_llava_onevision_weights_to_hf.py; interleave: its chat_template.json) with
    "<|im_start|>role\\n" ... "<|im_end|>\\n". These templates write every picture before the texts, so the
    engine gives them a message with pictures as one text with each "<image>" after its label (issue 29):
    "Image 1:<image>\\nImage 2:<image>\\n<prompt>".
    """
    q1, q2, q3 = "Compare Image 1 and Image 2", "Which one is darker?", "And Image 3?"
    if preset in ("tiny-faithful-llava", "tiny-faithful-llava-next"):
        return (f"{SYSTEM} USER: Image 1:<image>\nImage 2:<image>\n{q1} ASSISTANT: {a1} "
                f"USER: {q2} ASSISTANT: {a2} USER: Image 3:<image>\n{q3} ASSISTANT:")
    if preset == "tiny-faithful-llava-onevision":
        return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
                f"<|im_start|>user\nImage 1:<image>\nImage 2:<image>\n{q1}<|im_end|>\n"
                f"<|im_start|>assistant\n{a1}<|im_end|>\n<|im_start|>user\n{q2}<|im_end|>\n"
                f"<|im_start|>assistant\n{a2}<|im_end|>\n<|im_start|>user\nImage 3:<image>\n{q3}<|im_end|>\n"
                f"<|im_start|>assistant\n")
    return (f"<|im_start|>system\n\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n\nImage 1:<image>\nImage 2:<image>\n{q1}<|im_end|>\n"
            f"<|im_start|>assistant\n\n{a1}<|im_end|>\n<|im_start|>user\n\n{q2}<|im_end|>\n"
            f"<|im_start|>assistant\n\n{a2}<|im_end|>\n<|im_start|>user\n\nImage 3:<image>\n{q3}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def text_of(event) -> str:
    """The text of a stream item: a str chunk, or a ``TextDelta`` event (other events: "")."""
    if isinstance(event, str):
        return event
    return getattr(event, "text", "") if type(event).__name__ == "TextDelta" else ""
