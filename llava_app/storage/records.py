"""The one record of a conversation: saved conversations, export, import and feedback all use it.

A ``ConversationRecord`` is plain data (images by number and content hash, turns, the
settings it was held with) with one JSON form, written by ``to_json`` and read back,
checked, by ``from_json``. The live ``Conversation`` (chat layer) converts to and from
it; nothing here knows about the chat layer. ``image_label`` is the one place an image's
label ("Image 3") is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llava_app.errors import UserError
from llava_app.messages import Message

FORMAT = "llava-app.conversation"
#: the JSON form's version; a reader refuses a newer one (it may mean something this code does not know)
VERSION = 2  # 2: turns carry ids, parents and their images' numbers; other branches' turns in "branches"
_MAX_NUMBER = 1_000_000  # image numbers beyond any real chat: a damaged or hostile file
#: the most turns a conversation holds on the branch shown, and on all its branches together. Far beyond
#: any real chat (context fitting gives the model only the newest turns anyway), they bound the work one
#: file, one ``/v1`` request or one very long session can ask of the server.
MAX_TURNS = 1000
MAX_ALL_TURNS = 4000


def image_label(number: int) -> str:
    """The stable label of image ``number``, as the user and the model see it."""
    return f"Image {number}"


class ConversationFileError(UserError):
    """A file (or saved row) that is not a conversation this app wrote, or is damaged."""


@dataclass(frozen=True)
class ImageRecord:
    """An image of the conversation: its stable number, content hash, size and the turn it joined."""

    number: int
    sha256: str
    width: int
    height: int
    turn: int  # the user turn whose message carries it (== number of turns: waiting for the next question;
    # -1: only turns of other branches bring it)
    name: str = ""
    video: str = ""  # the clip this image is a keyframe of (its name then says when)

    @property
    def label(self) -> str:
        return image_label(self.number)


#: why an answer ended early (``TurnRecord.cut``)
CUT_REASONS = ("length", "server")


@dataclass(frozen=True)
class TurnRecord:
    """One exchange; ``assistant`` is None only for a last turn whose answer was never written.

    ``interrupted``: the answer was still being written when it was saved (a server crash or
    restart cut it off); files written before the flag existed read as False. ``cut``: why the answer
    ended early, "length" (its length limit) or "server" (the model server failed mid-answer); "" for none.
    """

    user: str
    assistant: str | None = None
    stopped: bool = False
    interrupted: bool = False
    cut: str = ""
    id: int = 0  # the turn's id in the conversation's branch tree (0: not recorded, version 1)
    parent: int = 0  # the id of the turn before it on its branch (0: a first turn)
    images: tuple[int, ...] | None = None  # the numbers of the images it brought (None: not recorded)
    #: how its answer was made (the answer footer's numbers: ``AnswerStats``' fields); None when not measured
    stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class PromptRecord:
    """What the model was given last (kept with saved conversations for the page's prompt view)."""

    text: str = ""
    n_images: int = 0
    n_tokens: int = 0
    image_labels: tuple[str, ...] = ()


@dataclass
class ConversationRecord:
    """A conversation as data.

    ``files`` says where this machine holds each image (content hash -> file); it is
    never written out: an export carries the bytes, a saved conversation its own copies.
    ``system_prompt`` None means "not recorded" (an import then keeps the page's).
    """

    images: list[ImageRecord] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    next_number: int = 1
    conversation_id: str = ""
    model: str = ""
    system_prompt: str | None = None
    last_prompt: PromptRecord | None = None
    #: the turns of the branches not shown (each with its id, parent and images); ``turns`` is the branch shown
    branches: list[TurnRecord] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def images_of_turn(self, index: int) -> list[ImageRecord]:
        """The images that joined user turn ``index``."""
        return [im for im in self.images if im.turn == index]

    @property
    def pending_images(self) -> list[ImageRecord]:
        """Images added after the last question."""
        return [im for im in self.images if im.turn >= len(self.turns)]

    # ----- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able data (the form every file and row of this app uses)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "conversation_id": self.conversation_id,
            "model": self.model,
        }
        if self.system_prompt is not None:
            data["system_prompt"] = self.system_prompt
        data["next_number"] = self.next_number
        data["images"] = [{"number": im.number, "label": im.label, "name": im.name, "width": im.width,
                           "height": im.height, "turn": im.turn, "sha256": im.sha256,
                           **({"video": im.video} if im.video else {})} for im in self.images]
        data["turns"] = [_turn_json(t) for t in self.turns]
        if self.branches:
            data["branches"] = [_turn_json(t) for t in self.branches]
        if self.last_prompt is not None:
            lp = self.last_prompt
            data["last_prompt"] = {"text": lp.text, "n_images": lp.n_images, "n_tokens": lp.n_tokens,
                                   "image_labels": list(lp.image_labels)}
        return data

    @classmethod
    def from_json(cls, data: Any, name: Any = None) -> ConversationRecord:
        """A record from JSON data, checked; anything else raises ``ConversationFileError`` naming ``name``.

        Unknown keys are ignored (an export's image ``data``/``file``, a feedback line's rating).
        """
        name = name or Message("record.the_file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConversationFileError("record.not_ours", name=name)
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise ConversationFileError("record.newer", name=name)
        turns_in, images_in = data.get("turns"), data.get("images")
        if not isinstance(turns_in, list) or not isinstance(images_in, list):
            raise ConversationFileError("record.no_lists", name=name)
        hidden_in = data.get("branches", [])
        if not isinstance(hidden_in, list):
            raise ConversationFileError("record.branches_damaged", name=name)
        if len(turns_in) > MAX_TURNS or len(turns_in) + len(hidden_in) > MAX_ALL_TURNS:
            raise ConversationFileError("record.too_many_turns", name=name, shown=len(turns_in),
                                        count=len(turns_in) + len(hidden_in), limit=MAX_TURNS, all=MAX_ALL_TURNS)
        turns = [_turn(t, i, len(turns_in), name) for i, t in enumerate(turns_in)]
        hidden = [_turn(t, i, len(hidden_in) + 1, name, Message("record.branch_turn")) for i, t in enumerate(hidden_in)]
        images = [_image(entry, name) for entry in images_in]
        numbers = [im.number for im in images]
        if len(set(numbers)) != len(numbers):
            raise ConversationFileError("record.numbers", name=name)
        declared = data.get("next_number")
        if not isinstance(declared, int) or not 1 <= declared <= _MAX_NUMBER:
            declared = 1
        system_prompt = data.get("system_prompt")
        return cls(images=images, turns=turns, next_number=max([declared, *(n + 1 for n in numbers)]),
                   conversation_id=_optional_text(data.get("conversation_id")),
                   model=_optional_text(data.get("model")),
                   system_prompt=system_prompt if isinstance(system_prompt, str) else None,
                   last_prompt=_prompt(data.get("last_prompt")), branches=hidden)


def _turn_json(t: TurnRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"user": t.user, "assistant": t.assistant, "stopped": t.stopped}
    if t.interrupted:
        data["interrupted"] = True
    if t.cut:
        data["cut"] = t.cut
    if t.id:
        data.update(id=t.id, parent=t.parent)
    if t.images is not None:
        data["images"] = list(t.images)
    if t.stats:
        data["stats"] = dict(t.stats)
    return data


#: the answer stats a record keeps, and their types (anything else in a file is dropped, never trusted)
STATS_FIELDS = {"ttft_s": float, "queued_s": float, "tokens_per_s": float, "prompt_tokens": int,
                "completion_tokens": int, "prefilled_tokens": int, "images_encoded": int, "images_cached": int,
                "finish_reason": str}


def _stats(value: Any) -> dict[str, Any] | None:
    """A turn's answer stats from a file: the known fields of the right types, bounded; None when unusable."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for name, kind in STATS_FIELDS.items():
        item = value.get(name)
        if kind is str:
            if isinstance(item, str) and len(item) <= 32:
                out[name] = item
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and 0 <= item < 1e9:
            out[name] = kind(item)
    return out if "completion_tokens" in out else None


def _text(value: Any, what: Message, name: Any) -> str:
    if not isinstance(value, str):
        raise ConversationFileError("record.not_text", name=name, what=what)
    return value


def _optional_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _whole(value: Any, low: int, what: Message, name: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_NUMBER:
        raise ConversationFileError("record.not_whole", name=name, what=what)
    return value


def _turn(entry: Any, i: int, count: int, name: Any, what: Any = None) -> TurnRecord:
    what = what or Message("record.turn")
    if not isinstance(entry, dict):
        raise ConversationFileError("record.turn_damaged", name=name, what=what, number=i + 1)
    assistant = entry.get("assistant")
    if assistant is None:
        if i != count - 1:
            raise ConversationFileError("record.no_answer", name=name, what=what, number=i + 1)
    else:
        assistant = _text(assistant, Message("record.answer_of", what=what, number=i + 1), name)
    images = entry.get("images")
    if images is not None:
        if not isinstance(images, list):
            raise ConversationFileError("record.turn_images", name=name, what=what, number=i + 1)
        images = tuple(_whole(n, 1, Message("record.image_number_of", what=what, number=i + 1), name) for n in images)
    question = Message("record.question_of", what=what, number=i + 1)
    return TurnRecord(user=_text(entry.get("user"), question, name), assistant=assistant,
                      stopped=bool(entry.get("stopped", False)),
                      id=_whole(entry.get("id", 0), 0, Message("record.turn_id"), name),
                      parent=_whole(entry.get("parent", 0), 0, Message("record.turn_parent"), name), images=images,
                      interrupted=assistant is not None and entry.get("interrupted") is True,
                      cut=entry.get("cut") if assistant is not None and entry.get("cut") in CUT_REASONS else "",
                      stats=_stats(entry.get("stats")) if assistant is not None else None)


def _image(entry: Any, name: str) -> ImageRecord:
    if not isinstance(entry, dict):
        raise ConversationFileError("record.image_damaged", name=name)
    number = entry.get("number")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= _MAX_NUMBER:
        raise ConversationFileError("record.numbers", name=name)
    label = image_label(number)
    if isinstance(entry.get("turn"), bool) or not isinstance(entry.get("turn"), int) or entry["turn"] < -1:
        raise ConversationFileError("record.image_turn", name=name, label=label)
    sha256 = _text(entry.get("sha256"), Message("record.hash_of", label=label), name)
    return ImageRecord(number=number, sha256=sha256,
                       width=_whole(entry.get("width"), 1, Message("record.width_of", label=label), name),
                       height=_whole(entry.get("height"), 1, Message("record.height_of", label=label), name),
                       turn=entry["turn"],
                       name=_text(entry.get("name", ""), Message("record.name_of", label=label), name),
                       video=_text(entry.get("video", ""), Message("record.video_of", label=label), name))


def _prompt(value: Any) -> PromptRecord | None:
    """The last prompt, when present and well formed (it is only shown, so a bad one is dropped)."""
    if not isinstance(value, dict):
        return None
    try:
        return PromptRecord(text=str(value["text"]), n_images=int(value["n_images"]),
                            n_tokens=int(value["n_tokens"]),
                            image_labels=tuple(str(s) for s in value["image_labels"]))
    except (KeyError, TypeError, ValueError):
        return None
