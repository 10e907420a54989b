"""The parts of a conversation: an image with its stable label, a turn, an answer's statistics."""

from __future__ import annotations

from dataclasses import dataclass

from llava_app.storage.records import image_label


@dataclass
class ImageRef:
    """An image of the conversation (stored normalised on disk by ``ImageStore``)."""

    number: int
    sha256: str
    path: str
    width: int
    height: int
    joined_at: int  # index of the user turn whose message carries this image
    name: str = ""
    video: str = ""  # the clip this image is a keyframe of ("clip.mp4"); its name then says when

    @property
    def frame_time(self) -> str:
        """A keyframe's time in its clip ("0:12"), from its name "clip.mp4 @ 0:12"; "" for other images."""
        lead = f"{self.video} @ "
        return self.name[len(lead):] if self.video and self.name.startswith(lead) else ""

    @property
    def label(self) -> str:
        """The stable label shown under the thumbnail and given to the model."""
        return image_label(self.number)


@dataclass(frozen=True)
class AnswerStats:
    """How an answer was made: the engine's ``Usage`` and the timing the service measured."""

    ttft_s: float | None  # the model's turn came (out of the line) to first text, seconds
    tokens_per_s: float | None  # decode rate after the first text
    prompt_tokens: int | None
    completion_tokens: int
    prefilled_tokens: int | None = None  # prompt tokens computed again (the rest came from a cached prefix)
    images_encoded: int | None = None
    images_cached: int | None = None
    finish_reason: str = "stop"  # "stop", "length" or "cancelled"
    queued_s: float | None = None  # seconds waiting in line before the model took the question


@dataclass
class Turn:
    """One exchange: the user's question and the model's answer (None while pending)."""

    user: str
    assistant: str | None = None
    stopped: bool = False  # the user pressed Stop; the partial answer is kept
    interrupted: bool = False  # a server crash or restart cut the answer off (restored from a save)
    #: why the answer ended before it was done: "length" (max new tokens, or the room left in the window) or
    #: "server" (the model server failed or went away mid-answer); "" when it ended by itself or by Stop
    cut: str = ""
    stats: AnswerStats | None = None  # set when the answer was generated here (not for loaded ones)
    # The branch tree (branches.py): ids are 1, 2, ... in the order turns were made (0: not yet given);
    # ``parent`` is the id of the turn before this one on its branch (0: the first turn).
    id: int = 0
    parent: int = 0
    images: list[int] | None = None  # numbers of the images this turn brought (None: not yet recorded)
