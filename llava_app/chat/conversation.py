"""Per-session conversation state: images with stable labels, turns, and the model messages.

A ``Conversation`` is a small plain object (one per browser session, held in
``gr.State``); it knows nothing of Gradio or torch. Images are numbered in upload
order ("Image 1", "Image 2", ...) and the numbers never change, even when an earlier
image is removed. Each image joins the conversation at the turn where it was added:
it is placed, with its label, in that turn's user message, so earlier turns' input
does not change when an image arrives mid-conversation. ``turns`` are those of the branch
shown; edits and Regenerate keep the others (``hidden``, ``stash``: see branches.py).

``to_record``/``restore`` convert to and from the storage layer's ``ConversationRecord``
(saved conversations, export and import, feedback); a conversation is only ever built
from data by ``restore``.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from llava_app.chat import branches
from llava_app.chat.parts import AnswerStats, ImageRef, Turn
from llava_app.engine.base import PromptInfo
from llava_app.errors import UserError
from llava_app.storage.records import (
    MAX_ALL_TURNS,
    MAX_TURNS,
    ConversationRecord,
    ImageRecord,
    PromptRecord,
    image_label,
)

log = logging.getLogger(__name__)

#: opens the model-written summary of the turns dropped to fit the context window
SUMMARY_LEAD = "Summary of the earlier conversation:"


@dataclass(frozen=True)
class ImageSnapshot:
    """The images of a conversation at one moment (``Conversation.image_snapshot``)."""

    images: list[ImageRef]
    stash: list[ImageRef]
    next_number: int


def _locked(method):
    """Run ``method`` holding the conversation's lock."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return locked


@dataclass
class Conversation:
    """The state of one chat. Plain data and its lock; copy-safe; no tensors."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    images: list[ImageRef] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    next_number: int = 1
    last_prompt: PromptInfo | None = None
    # Context-window fitting (see context.py): turns before ``first_visible`` are no
    # longer given to the model; ``context_summary`` (model-written) stands in for them.
    first_visible: int = 0
    context_summary: str = ""
    context_window: int | None = None
    #: images removed after a question carried them: the chat still shows where they were
    removed: list[ImageRef] = field(default_factory=list)
    # Branches (branches.py): ``turns`` is the branch shown; turns of the other branches, the images only
    # they bring, and each turn's child last shown (parent id -> child id) are kept here.
    hidden: list[Turn] = field(default_factory=list)
    stash: list[ImageRef] = field(default_factory=list)
    chosen: dict[int, int] = field(default_factory=dict)
    next_turn: int = 1
    #: names the folder the page is given this conversation's pictures from (``storage/shown.py``): a secret
    #: that only this conversation's page holds; never written to a record (a restored one gets a new key)
    view_key: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False, compare=False)
    #: held by every change, and by reads that need one consistent state (see the module docstring)
    lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # copies and pickles get a lock of their own
        state = self.__dict__.copy()
        state.pop("lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()

    @_locked
    def set_prompt(self, info: PromptInfo | None) -> None:
        """What the model was (or would be) given for the newest turn."""
        self.last_prompt = info

    # ----- images -------------------------------------------------------------------------
    def find_image(self, sha256: str) -> ImageRef | None:
        """The image with this content hash, if the branch shown has it."""
        return next((im for im in self.images if im.sha256 == sha256), None)

    def all_images(self) -> list[ImageRef]:
        """Every image of the conversation, on any branch (labels belong to the conversation)."""
        return [*self.images, *self.stash]

    @_locked
    def add_image(self, sha256: str, path: str, width: int, height: int, name: str = "",
                  max_images: int | None = None, number: int | None = None, video: str = ""
                  ) -> tuple[ImageRef, bool]:
        """Add an image at the current turn; returns ``(ref, added)``.

        The same picture uploaded twice is kept once (``added`` is False). ``number``
        gives the image a label it already had (a conversation being rebuilt, see
        ``restore``); by default it gets the next one. A number is never given twice.
        """
        existing = self.find_image(sha256)
        if existing is not None:
            return existing, False
        hidden = next((im for im in self.stash if im.sha256 == sha256), None)
        if hidden is not None:  # a picture another branch has keeps its label on this one
            self.stash.remove(hidden)
            number = hidden.number
        if max_images is not None and len(self.images) >= max_images:
            raise UserError("chat.too_many_images", count=len(self.images), limit=max_images)
        if number is None:
            number = self.next_number
        elif number < 1 or any(im.number == number for im in self.images + self.stash):
            raise UserError("chat.label_twice", label=image_label(number))
        ref = ImageRef(number=number, sha256=sha256, path=path, width=width, height=height,
                       joined_at=len(self.turns), name=name, video=video)
        self.next_number = max(self.next_number, number + 1)
        self.images.append(ref)
        return ref, True

    @_locked
    def image_snapshot(self) -> ImageSnapshot:
        """The images of every branch and the numbering, for ``restore_images`` (an all-or-nothing attach)."""
        return ImageSnapshot(list(self.images), list(self.stash), self.next_number)

    @_locked
    def restore_images(self, snapshot: ImageSnapshot) -> None:
        """Put the images back as ``image_snapshot`` found them: a picture taken from another branch's stash
        by a refused batch goes back there, and numbers given in the batch are given again."""
        self.images[:] = snapshot.images
        self.stash[:] = snapshot.stash
        self.next_number = snapshot.next_number

    @_locked
    def remove_image(self, number: int) -> ImageRef:
        """Remove ``Image <number>`` (from every branch); the other labels stay as they are."""
        for pool in (self.images, self.stash):
            for i, im in enumerate(pool):
                if im.number == number:
                    for turn in self.turns + self.hidden:
                        if turn.images and number in turn.images:
                            turn.images.remove(number)
                    ref = pool.pop(i)
                    if pool is self.images and ref.joined_at < len(self.turns):  # a question carried it:
                        self.removed.append(ref)  # the chat keeps its place, labelled
                    return ref
        raise UserError("chat.no_image", label=image_label(number))

    def images_for_turn(self, index: int) -> list[ImageRef]:
        """The images carried by user turn ``index``."""
        return [im for im in self.images if im.joined_at == index]

    def prompt_images_for_turn(self, index: int, first_visible: int | None = None) -> list[ImageRef]:
        """The images the model gets with turn ``index``: hidden turns' images move to the first visible one."""
        start = self.first_visible if first_visible is None else first_visible
        if index == start:
            return [im for im in self.images if im.joined_at <= index]
        return self.images_for_turn(index)

    def is_visible(self, index: int) -> bool:
        """Whether the model still sees turn ``index`` (older turns were dropped to fit its window)."""
        return index >= self.first_visible

    @property
    def pending_images(self) -> list[ImageRef]:
        """Images added since the last question; they go with the next one."""
        return [im for im in self.images if im.joined_at >= len(self.turns)]

    # ----- turns --------------------------------------------------------------------------
    @_locked
    def ask(self, question: str) -> Turn:
        """Start a new turn with the pending images; its answer is generated next."""
        if self.turns and self.turns[-1].assistant is None:
            raise UserError("chat.still_writing")
        if len(self.turns) >= MAX_TURNS:
            raise UserError("chat.too_many_turns", limit=MAX_TURNS)
        if len(self.turns) + len(self.hidden) >= MAX_ALL_TURNS:
            raise UserError("branch.too_many", limit=MAX_ALL_TURNS)
        branches.sync(self)
        return self._ask(question)

    def _ask(self, question: str) -> Turn:
        """``ask`` for a conversation whose turns have their ids (``restore`` syncs once, not once per turn)."""
        pending = self.pending_images
        for im in pending:
            im.joined_at = len(self.turns)
        turn = Turn(user=question, id=branches.new_id(self), parent=self.turns[-1].id if self.turns else 0,
                    images=[im.number for im in pending])
        self.chosen[turn.parent] = turn.id
        self.turns.append(turn)
        return turn

    @_locked
    def answer(self, text: str, stopped: bool = False, stats: AnswerStats | None = None,
               interrupted: bool = False, cut: str = "") -> None:
        """Record the answer of the newest turn (``cut``: see ``Turn.cut``)."""
        self.turns[-1].assistant = text
        self.turns[-1].stopped = stopped
        self.turns[-1].interrupted = interrupted
        self.turns[-1].stats = stats
        self.turns[-1].cut = cut

    @_locked
    def retract(self) -> str:
        """Drop the newest turn (a failed generation); its images go back to pending.

        A turn that had siblings gives way to the newest of them (a failed edit or
        Regenerate shows the branch it would have replaced).
        """
        branches.sync(self)
        turn = self.turns.pop()
        self.removed = [im for im in self.removed if im.joined_at < len(self.turns)]
        branches.drop(self, turn)
        self.first_visible = min(self.first_visible, len(self.turns))
        if self.first_visible == 0:
            self.context_summary = ""
        return turn.user

    @_locked
    def undo(self) -> str:
        """Remove the last exchange and its other answers (Regenerate's); returns its question (for the box).
        A sibling that other turns follow is a branch of its own: it stays, and is shown."""
        if not self.turns:
            raise UserError("chat.nothing_undo")
        branches.drop_answers(self, self.turns[-1])
        return self.retract()

    @_locked
    def regenerate(self) -> Turn:
        """A new answer to the last question, as a sibling: the old answer stays on its own branch."""
        if not self.turns:
            raise UserError("chat.nothing_regenerate")
        last = self.turns[-1]
        if last.assistant is None:  # never answered: nothing to keep
            last.stopped, last.interrupted, last.stats, last.cut = False, False, None, ""
            return last
        return branches.fork(self, len(self.turns) - 1, last.user)

    # ----- the record (saved conversations, export, import, feedback, /v1) ----------------
    @classmethod
    def restore(cls, record: ConversationRecord, max_images: int | None = None) -> Conversation:
        """A new conversation (a fresh id) built from a record: the one way to build one from data.

        Images are added as uploads are (``add_image``) and turns asked and answered in
        order, so the same rules hold: each image keeps its number (its label), a picture
        that appears twice is kept once, ``next_number`` never gives an old label again,
        ``max_images`` applies. An image whose file is not in ``record.files`` is left out.
        An unanswered last turn stays pending.
        """
        conv = cls()
        last = len(record.turns)

        def add_images_of(index: int) -> None:
            for im in record.images:
                if min(im.turn, last) != index:
                    continue
                path = record.files.get(im.sha256)
                if path is None:
                    log.warning("an image file of a conversation is missing; it is restored without it")
                    continue
                conv.add_image(im.sha256, path, im.width, im.height, im.name, max_images=max_images,
                               number=im.number, video=im.video)

        for i, turn in enumerate(record.turns):
            add_images_of(i)
            conv._ask(turn.user)  # every turn before it was made here: the ids are in order
            if turn.assistant is not None:
                conv.answer(turn.assistant, stopped=turn.stopped, interrupted=turn.interrupted, cut=turn.cut)
        add_images_of(last)
        branches.restore_tree(conv, record, max_images)
        conv.next_number = max([conv.next_number, record.next_number, *(im.number + 1 for im in record.images)])
        lp = record.last_prompt
        if lp is not None:
            conv.last_prompt = PromptInfo(text=lp.text, n_images=lp.n_images, n_tokens=lp.n_tokens,
                                          image_labels=list(lp.image_labels))
        return conv

    @_locked
    def to_record(self, *, model: str = "", system_prompt: str | None = None,
                  with_prompt: bool = False) -> ConversationRecord:
        """The conversation as a record (with where its image files are); ``with_prompt`` keeps the last prompt."""
        branches.sync(self)
        info = self.last_prompt if with_prompt else None
        return ConversationRecord(
            images=[ImageRecord(number=im.number, sha256=im.sha256, width=im.width, height=im.height,
                                turn=-1 if im in self.stash else im.joined_at, name=im.name, video=im.video)
                    for im in self.all_images()],
            turns=[branches.turn_record(t) for t in self.turns],
            branches=[branches.turn_record(t) for t in self.hidden],
            next_number=self.next_number, conversation_id=self.id, model=model, system_prompt=system_prompt,
            last_prompt=None if info is None else PromptRecord(text=info.text, n_images=info.n_images,
                                                               n_tokens=info.n_tokens,
                                                               image_labels=tuple(info.image_labels)),
            files={im.sha256: im.path for im in self.all_images()},
        )

    # ----- what the model gets ------------------------------------------------------------
    @_locked
    def messages(self, system_prompt: str = "", first_visible: int | None = None,
                 summary: str | None = None) -> list[dict[str, Any]]:
        """The conversation as chat-template messages with ``image``/``text`` content parts.

        Image parts carry their ``ImageRef`` under ``"ref"``; each image is preceded by a
        text part with its label, so the model can tell "Image 3" from "Image 1". A
        final turn with no answer yet ends the list (the engine adds the generation prompt).
        Turns before ``first_visible`` (default: the conversation's own) are left out;
        their images, and the ``summary`` of them, open the first turn that is kept.
        Keyframes of one video are introduced by a text part saying so (``image_parts``).
        """
        start = self.first_visible if first_visible is None else first_visible
        summary = self.context_summary if summary is None else summary
        msgs: list[dict[str, Any]] = []
        if system_prompt.strip():
            msgs.append({"role": "system", "content": [{"type": "text", "text": system_prompt.strip()}]})
        for i, turn in enumerate(self.turns):
            if i < start:
                continue
            content: list[dict[str, Any]] = []
            if i == start and start > 0 and summary.strip():
                content.append({"type": "text", "text": f"{SUMMARY_LEAD} {summary.strip()}\n"})
            content += image_parts(self.prompt_images_for_turn(i, start))
            content.append({"type": "text", "text": turn.user})
            msgs.append({"role": "user", "content": content})
            if turn.assistant is not None:
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": turn.assistant}]})
        return msgs

    @_locked
    def summary(self) -> dict[str, Any]:
        """A JSON-able description for ``/context`` and the page's panel."""
        info = self.last_prompt or PromptInfo()
        return {
            "conversation_id": self.id,
            "images": [{"label": im.label, "name": im.name, "width": im.width, "height": im.height,
                        "turn": im.joined_at, "sha256": im.sha256} for im in self.images],
            "image_count": len(self.images),
            "pending_images": [im.label for im in self.pending_images],
            "prompt_images": info.n_images,
            "prompt_image_labels": info.image_labels,
            "prompt_tokens": info.n_tokens,
            "prompt": info.text,
            "turns": [{"user": t.user, "assistant": t.assistant, "stopped": t.stopped, "interrupted": t.interrupted,
                       "cut": t.cut or None, "finish_reason": t.stats.finish_reason if t.stats else None,
                       "in_prompt": self.is_visible(i)} for i, t in enumerate(self.turns)],
            "branches": branches.describe(self),
            "context": {
                "window": self.context_window,
                "prompt_tokens": info.n_tokens,
                "prompt_tokens_estimated": info.estimated,
                "image_tokens": info.n_image_tokens,
                "hidden_turns": self.first_visible,
                "summary": self.context_summary,
            },
        }


def image_parts(images: list[ImageRef]) -> list[dict[str, Any]]:
    """Content parts for images: each label before its image; a run of one video's keyframes opens with
    a line telling the model they are frames of one clip, in time order, and when each was taken."""
    parts: list[dict[str, Any]] = []
    for k, im in enumerate(images):
        if im.video and (k == 0 or images[k - 1].video != im.video):
            run = [im]
            for nxt in images[k + 1:]:
                if nxt.video != im.video:
                    break
                run.append(nxt)
            times = ", ".join(f"{f.label} at {f.frame_time}" if f.frame_time else f.label for f in run)
            lead = f"The next {len(run)} images are" if len(run) > 1 else "The next image is"
            # its own line: the first frame's label follows it ("... at 0:08).\nImage 1:", not ").Image 1:")
            parts.append({"type": "text",
                          "text": f"{lead} frames of one video, {im.video}, in time order ({times}).\n"})
        parts.append({"type": "text", "text": f"{im.label}:"})
        parts.append({"type": "image", "ref": im})
    return parts
