"""A prompt's token ids with its image placeholders expanded, without tokenising thousands of placeholders.

The processor writes each image as its placeholder token repeated once per image token (576 to a few
thousand times) and tokenises that text: most of a follow-up's prompt layout time goes on those
repeats. The tokenizer splits added tokens out before anything else, so the same ids come from
tokenising the prompt with one placeholder per image and repeating that id instead. That is checked
once per tokenizer against the processor's way (and given up, with a log line, if they differ).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


class PromptIds:
    """``ids(text, replacements)``: the processor's token ids of ``text`` with each placeholder expanded."""

    def __init__(self, processor, text_kwargs: dict[str, Any], image_token: str, image_token_id: int,
                 tokenizer_lock: Any = None):
        self.processor, self.text_kwargs = processor, text_kwargs
        self.image_token, self.image_token_id = image_token, image_token_id
        self._lock = tokenizer_lock or contextlib.nullcontext()
        self.fast: bool | None = None  # None: not checked yet

    def _tokenise(self, text: str) -> list[int]:
        ids = self.processor.tokenizer([text], **self.text_kwargs)["input_ids"][0]
        return [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]

    def processor_way(self, text: str, replacements: list[str]) -> list[int]:
        """The placeholders expanded in the text, then tokenised (what the processor does)."""
        with self._lock:
            expanded, _ = self.processor.get_text_with_replacements([text], replacements)
            return self._tokenise(expanded[0])

    def __call__(self, text: str, replacements: list[str]) -> list[int]:
        counts = [r.count(self.image_token) for r in replacements]
        if self.fast is False or any(r != self.image_token * n for r, n in zip(replacements, counts, strict=False)):
            return self.processor_way(text, replacements)
        with self._lock:
            short = self._tokenise(text)
        if short.count(self.image_token_id) != len(counts):
            return self.processor_way(text, replacements)
        ids: list[int] = []
        repeats = iter(counts)
        for i in short:
            ids.extend([i] * next(repeats) if i == self.image_token_id else (i,))
        if self.fast is None and counts:  # checked on the first prompt with an image
            self.fast = ids == self.processor_way(text, replacements)
            if not self.fast:
                log.info("this tokenizer reads expanded image placeholders differently; prompts are laid out "
                         "the processor's way")
                return self.processor_way(text, replacements)
        return ids
