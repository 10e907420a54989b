"""Pointing, for the service: what an answer points at (on which picture), and regions sent with a question.

The rules and the arithmetic are in ``grounding.py``; this module knows the conversation and the engine: which
pictures a turn had in play, which convention the model speaks (``--grounding``, else its architecture, else
the served model id), and how its processor frames a picture.
"""

from __future__ import annotations

import functools

from llava_app.chat import grounding, regions
from llava_app.chat.conversation import Conversation
from llava_app.chat.grounding import Convention, Region
from llava_app.chat.regions import Ask
from llava_app.engine.base import Backend
from llava_app.engine.geometry import PictureGeometry
from llava_app.errors import UserError
from llava_app.storage.images import ImageStore
from llava_app.storage.records import ConversationRecord, image_label


class Pointing:
    """Boxes in answers and regions in questions, for one engine (``override``: ``--grounding``)."""

    def __init__(self, backend: Backend, store: ImageStore, override: str = ""):
        if override and override not in grounding.CHOICES:
            raise ValueError(f"unknown grounding format {override!r}; known: {', '.join(grounding.CHOICES)}")
        self.backend, self.store, self.override = backend, store, override

    def convention(self) -> Convention | None:
        """The model's way of writing coordinates (None: it has none the app knows, or ``--grounding none``)."""
        if self.override == "none":
            return None
        return grounding.convention_for(self.backend.model_type, self.backend.model_name, self.override)

    def geometry(self, convention: Convention | None) -> PictureGeometry | None:
        """The engine's own framing where it knows it (the local engine's processor), else the convention's."""
        own = self.backend.picture_geometry()
        return own if own is not None else (convention.geometry if convention else None)

    def pointed(self, conv: Conversation, turn: int = -1) -> tuple[list[Region], list[tuple[int, int, int]]]:
        """What the answer of turn ``turn`` (0-based on the branch shown; -1 the newest) points at, on which
        picture, and the code blocks it wrote that in (``grounding.raw_blocks``: the page folds them)."""
        with conv.lock:
            if not conv.turns:
                return [], []
            index = turn if turn >= 0 else len(conv.turns) + turn
            if not 0 <= index < len(conv.turns):
                raise UserError("region.no_turn", turn=turn, count=len(conv.turns))
            text = conv.turns[index].assistant or ""
            pictures = {im.number: (im.width, im.height) for im in conv.images if im.joined_at <= index}
        return self.read(text, pictures)

    def read(self, text: str, pictures: dict[int, tuple[int, int]]
             ) -> tuple[list[Region], list[tuple[int, int, int]]]:
        """What ``text`` points at on ``pictures`` (number -> width, height), and the blocks it wrote that in."""
        convention = self.convention()
        if convention is None or not text:
            return [], []
        regions, blocks = _read(text, tuple(sorted(pictures.items())), convention, self.geometry(convention))
        return list(regions), list(blocks)

    def of_record(self, record: ConversationRecord) -> list[list[Region]]:
        """What each answer of a saved conversation points at (a share page, an export)."""
        return [self.read(turn.assistant or "", {im.number: (im.width, im.height) for im in record.images
                                                 if 0 <= im.turn <= i})[0] for i, turn in enumerate(record.turns)]

    def ask(self, conv: Conversation, question: str, asks: list[Ask]) -> None:
        """Ask ``question`` with the person's regions told after it (they stay in the question's text); a
        refused region or question leaves nothing behind."""
        with conv.lock:
            before = conv.image_snapshot()
            try:
                said = self.phrase(conv, asks)
                conv.ask(f"{question}\n{said}" if said else question)
            except BaseException:
                conv.restore_images(before)
                raise

    def phrase(self, conv: Conversation, asks: list[Ask]) -> str:
        """The words that tell the model of the person's regions, in its convention; a region the model has no
        way to take (or cannot see: outside a centre crop) joins the question as a picture of its own, cut out
        of its picture. Call under the conversation's lock, before ``ask``: cut-outs join the pending pictures."""
        convention = self.convention()
        geometry = self.geometry(convention)
        lines = []
        for ask in asks:
            picture = next((im for im in conv.images if im.number == ask.image), None)
            if picture is None:
                raise UserError("chat.no_image", label=image_label(ask.image))
            ask = regions.clamp_ask(ask, picture.width, picture.height)
            said = (regions.region_text(ask, picture.label, convention, geometry, picture.width, picture.height)
                    if convention is not None else None)
            if said is None:
                box = regions.crop_box(ask, picture.width, picture.height)
                stored = self.store.put(self.store.open(picture.sha256).crop(box))
                cut, _ = conv.add_image(stored.sha256, str(stored.path), stored.width, stored.height,
                                        name=f"{picture.label} region")
                said = f"{cut.label} is a region of {picture.label} (pixels {', '.join(str(v) for v in box)})"
            lines.append(said)
        return "(" + "; ".join(lines) + ")" if lines else ""


@functools.lru_cache(maxsize=4096)
def _read(text: str, pictures: tuple, convention: Convention, geometry: PictureGeometry | None) -> tuple:
    """``Pointing.read``, remembered: the page reads every answer again on each streamed update of the newest."""
    return (tuple(grounding.regions(text, convention, geometry, dict(pictures))),
            tuple(grounding.raw_blocks(text, convention)))


class PointedAnswers:
    """``ChatService``'s side of pointing (it sets ``pointing``)."""

    pointing: Pointing

    def regions(self, conv: Conversation, turn: int = -1) -> list[Region]:
        """What the answer of turn ``turn`` (0-based; -1 the newest) points at, on which picture."""
        return self.pointing.pointed(conv, turn)[0]

    def pointed(self, conv: Conversation, turn: int = -1) -> tuple[list[Region], list[tuple[int, int, int]]]:
        """``regions`` and the code blocks the answer wrote them in (the page folds those)."""
        return self.pointing.pointed(conv, turn)

    def record_regions(self, record: ConversationRecord) -> list[list[dict]]:
        """What each answer of a saved conversation points at, as ``/regions`` gives it (exports, share pages)."""
        return [[region.as_dict() for region in turn] for turn in self.pointing.of_record(record)]
