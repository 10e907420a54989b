"""Branches of a conversation: edit any earlier question, regenerate an answer, keep what came before.

The turns form a tree: each ``Turn`` has an ``id`` (1, 2, ... in the order turns were made)
and the id of the turn before it on its branch (``parent``; 0 for a first turn). Turns with
one parent are siblings ("2/3"). ``Conversation.turns`` stays what it always was, the turns
of the branch shown, so context fitting, the model's messages, the views and the record read
it unchanged; the turns of the other branches wait in ``Conversation.hidden``.

Image labels belong to the conversation: "Image 4" is one picture on every branch. Each turn
records the numbers of the images it brought (``Turn.images``); ``Conversation.images`` holds
the images of the branch shown (and those waiting for the next question), and the images only
other branches bring wait in ``Conversation.stash``. Switching branch moves them between the two.

Functions here take the conversation's lock themselves where they change it. They work on what
``Branched`` names of a conversation; ``Conversation`` imports this module, never the other way round.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from typing import Any, Protocol

from llava_app.chat.parts import AnswerStats, ImageRef, Turn
from llava_app.errors import UserError
from llava_app.storage.records import MAX_ALL_TURNS, TurnRecord, image_label


class Branched(Protocol):
    """What these functions read and change of a conversation (``Conversation`` has it all)."""

    turns: list[Turn]  # the branch shown
    hidden: list[Turn]  # the other branches' turns
    images: list[ImageRef]  # the branch shown's images, and those waiting for the next question
    stash: list[ImageRef]  # images only other branches bring
    chosen: dict[int, int]  # parent turn id -> the child shown last
    next_turn: int
    first_visible: int
    context_summary: str
    lock: threading.RLock

    def all_images(self) -> list[ImageRef]: ...


def new_id(conv: Branched) -> int:
    """The next turn id of this conversation."""
    tid = conv.next_turn
    conv.next_turn += 1
    return tid


def sync(conv: Branched) -> None:
    """Give ids, parents and image lists to turns made without them (older records, hand-built turns)."""
    known = [t.id for t in conv.turns + conv.hidden if t.id]
    conv.next_turn = max([conv.next_turn, *(i + 1 for i in known)])
    parent = 0
    for i, turn in enumerate(conv.turns):
        if not turn.id:
            turn.id = new_id(conv)
            turn.parent = parent
        if turn.images is None:
            turn.images = [im.number for im in conv.images if im.joined_at == i]
        parent = turn.id


def siblings(conv: Branched, index: int) -> list[Turn]:
    """The turns that share the parent of shown turn ``index`` (itself included), oldest first."""
    parent = conv.turns[index].parent
    return sorted((t for t in conv.turns[index:index + 1] + conv.hidden if t.parent == parent), key=lambda t: t.id)


def position(conv: Branched, index: int) -> tuple[int, int]:
    """``(k, n)``: shown turn ``index`` is sibling ``k`` (0-based) of ``n``."""
    group = siblings(conv, index)
    return next(k for k, t in enumerate(group) if t is conv.turns[index]), len(group)


def positions(conv: Branched) -> list[tuple[int, int]]:
    """``position`` of every shown turn, in one pass over the other branches (not one per turn shown)."""
    others: dict[int, list[int]] = {}
    for t in conv.hidden:
        others.setdefault(t.parent, []).append(t.id)
    for ids in others.values():
        ids.sort()
    out = []
    for turn in conv.turns:
        ids = others.get(turn.parent, [])
        out.append((bisect.bisect_left(ids, turn.id), len(ids) + 1))
    return out


def _children_of(conv: Branched) -> dict[int, list[Turn]]:
    """Parent id -> its children on every branch, oldest first (one pass; asked once per walk)."""
    kids: dict[int, list[Turn]] = {}
    for t in sorted(conv.turns + conv.hidden, key=lambda t: t.id):
        kids.setdefault(t.parent, []).append(t)
    return kids


def _descend(conv: Branched, turn: Turn) -> list[Turn]:
    """``turn`` and the turns after it: at each step the child shown last (else the newest)."""
    children = _children_of(conv)
    path, seen = [turn], {turn.id}
    while True:
        kids = [t for t in children.get(path[-1].id, ()) if t.id not in seen]  # (a damaged record may loop)
        if not kids:
            return path
        want = conv.chosen.get(path[-1].id)
        path.append(next((t for t in kids if t.id == want), kids[-1]))
        seen.add(path[-1].id)


def show(conv: Branched, path: list[Turn], changed_at: int) -> None:
    """Make ``path`` the branch shown (it differs from the old one from turn ``changed_at`` on).

    Images follow their turns: those the path's turns brought are shown (each at the first
    turn that brought it), images waiting for the next question keep waiting, the rest wait
    in the stash. Context fitting that dropped turns after the change starts again.
    """
    pool = {im.number: im for im in conv.all_images()}
    pending = [im for im in conv.images if im.joined_at >= len(conv.turns)]
    everything = conv.turns + conv.hidden
    conv.turns = list(path)
    ids = {t.id for t in path}
    conv.hidden = [t for t in everything if t.id not in ids]
    shown: dict[int, int] = {}
    for i, turn in enumerate(path):
        for number in turn.images or []:
            shown.setdefault(number, i)
        conv.chosen[turn.parent] = turn.id
    for im in pending:
        shown.setdefault(im.number, len(path))
    for number, i in shown.items():
        if number in pool:
            pool[number].joined_at = i
    conv.images = sorted((pool[n] for n in shown if n in pool), key=lambda im: (im.joined_at, im.number))
    conv.stash = sorted((im for n, im in pool.items() if n not in shown), key=lambda im: im.number)
    if changed_at < conv.first_visible:
        conv.first_visible, conv.context_summary = 0, ""


def drop(conv: Branched, turn: Turn) -> None:
    """``turn``, just taken off the end of the branch shown, is gone; a sibling it replaced comes back."""
    conv.hidden = [t for t in conv.hidden if t.id != turn.id]
    if conv.chosen.get(turn.parent) == turn.id:
        del conv.chosen[turn.parent]
    rest = [t for t in conv.hidden if t.parent == turn.parent]
    if rest:
        conv.turns.append(turn)  # show() reads the images that were pending before the turn was asked
        show(conv, conv.turns[:-1] + _descend(conv, rest[-1]), len(conv.turns) - 1)
        conv.hidden = [t for t in conv.hidden if t.id != turn.id]


def drop_answers(conv: Branched, turn: Turn) -> None:
    """Forget ``turn``'s siblings that nothing follows (other answers to it, as Regenerate keeps them)."""
    parents = {t.parent for t in conv.turns + conv.hidden}
    conv.hidden = [t for t in conv.hidden if t.parent != turn.parent or t.id in parents]


def fork(conv: Branched, index: int, question: str, add: list[int] = (), remove: list[int] = ()) -> Turn:
    """A new sibling of shown turn ``index`` asking ``question``, with that turn's images less ``remove``
    plus ``add`` (numbers of images waiting for the next question); it becomes the newest turn shown,
    unanswered. What followed turn ``index`` stays on the branch it was on."""
    with conv.lock:
        sync(conv)
        if not 0 <= index < len(conv.turns):
            raise UserError("branch.no_turn_to_edit", number=index + 1, count=len(conv.turns))
        if conv.turns[-1].assistant is None:
            raise UserError("chat.still_writing")
        if len(conv.turns) + len(conv.hidden) >= MAX_ALL_TURNS:
            raise UserError("branch.too_many", limit=MAX_ALL_TURNS)
        base = conv.turns[index]
        known = {im.number for im in conv.images}
        waiting = {im.number for im in conv.images if im.joined_at >= len(conv.turns)}
        for n in remove:
            if n not in (base.images or []):
                raise UserError("branch.not_turn_image", label=image_label(n), number=index + 1)
        for n in add:
            if n not in waiting or n not in known:
                raise UserError("branch.not_waiting", label=image_label(n))
        images = [n for n in base.images or [] if n not in remove] + [n for n in add if n not in (base.images or [])]
        turn = Turn(user=question, id=new_id(conv), parent=base.parent, images=images)
        conv.hidden.append(turn)
        show(conv, conv.turns[:index] + [turn], index)
        return turn


def switch(conv: Branched, index: int, k: int) -> None:
    """Show sibling ``k`` (0-based) of shown turn ``index``, with the turns that followed it when last shown."""
    with conv.lock:
        sync(conv)
        if not 0 <= index < len(conv.turns):
            raise UserError("branch.no_turn", number=index + 1, count=len(conv.turns))
        if conv.turns[-1].assistant is None:
            raise UserError("branch.wait_switch")
        group = siblings(conv, index)
        if not 0 <= k < len(group):
            raise UserError("branch.no_version", number=index + 1, count=len(group), index=k + 1)
        if group[k] is not conv.turns[index]:
            show(conv, conv.turns[:index] + _descend(conv, group[k]), index)


def describe(conv: Branched) -> list[dict[str, Any]]:
    """Per turn shown: which version it is of how many (``/context``'s ``branches``; the page's "< 2/3 >")."""
    with conv.lock:
        sync(conv)
        return [{"turn": i, "index": k, "count": n, "images": [image_label(m) for m in turn.images or []]}
                for i, (turn, (k, n)) in enumerate(zip(conv.turns, positions(conv), strict=True))]


# ----- the record (storage/records.py, version 2) -----------------------------------------------
def turn_record(turn: Turn):
    """A turn as the record keeps it: with its id, parent and images."""
    stats = None if turn.stats is None else {k: v for k, v in dataclasses.asdict(turn.stats).items() if v is not None}
    return TurnRecord(user=turn.user, assistant=turn.assistant, stopped=turn.stopped, interrupted=turn.interrupted,
                      cut=turn.cut, id=turn.id, parent=turn.parent,
                      images=None if turn.images is None else tuple(turn.images), stats=stats)


def turn_stats(stats: dict | None) -> AnswerStats | None:
    """A record's answer stats (``TurnRecord.stats``, checked when read) as the footer's ``AnswerStats``."""
    if not stats:
        return None
    known = {f.name for f in dataclasses.fields(AnswerStats)}
    values = {name: value for name, value in stats.items() if name in known}
    values.setdefault("ttft_s", None)
    values.setdefault("tokens_per_s", None)
    values.setdefault("prompt_tokens", None)
    return AnswerStats(**values)


def restore_tree(conv: Branched, record, max_images: int | None) -> None:
    """After ``Conversation.restore`` rebuilt the branch shown: the record's turn ids, the other branches'
    turns and the images only they bring (a version-1 record has neither: the shown branch is all)."""
    for im in record.images:
        path = record.files.get(im.sha256)
        if im.turn != -1 or path is None:
            continue
        if max_images is not None and len(conv.all_images()) >= max_images * 4:
            break  # a branch-heavy file is not a way around the image limit
        conv.stash.append(ImageRef(number=im.number, sha256=im.sha256, path=path, width=im.width,
                                   height=im.height, joined_at=-1, name=im.name, video=im.video))
    have = {im.number for im in conv.all_images()}
    for turn, rec in zip(conv.turns, record.turns, strict=False):
        if rec.id:
            turn.id, turn.parent = rec.id, rec.parent
        if rec.images is not None:
            turn.images = [n for n in rec.images if n in have]
        if turn.stats is None and turn.assistant is not None:
            turn.stats = turn_stats(rec.stats)
    shown = {t.id for t in conv.turns}
    for rec in record.branches:
        if not rec.id or rec.id in shown:
            continue
        conv.hidden.append(Turn(user=rec.user, assistant=rec.assistant if rec.assistant is not None else "",
                                stopped=rec.stopped, interrupted=rec.interrupted, cut=rec.cut, id=rec.id,
                                parent=rec.parent, stats=turn_stats(rec.stats),
                                images=[n for n in rec.images or () if n in have]))
    for turn in conv.turns:
        conv.chosen[turn.parent] = turn.id
    conv.next_turn = 1
    sync(conv)


def is_new_branch(conv: Branched) -> bool:
    """The pending turn has siblings: its prompt starts a branch (the engine keeps the other's cache)."""
    with conv.lock:
        sync(conv)
        return bool(conv.turns) and conv.turns[-1].assistant is None and position(conv, len(conv.turns) - 1)[1] > 1
