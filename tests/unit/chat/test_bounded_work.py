"""Bounded work: a long conversation, a branch-heavy file or a long /v1 request costs time linear in its size,
and what is past the explicit limits is refused at once, saying so."""

from __future__ import annotations

import gc
import json
import statistics
import time

import pytest

from llava_app.chat import branches
from llava_app.chat.conversation import MAX_TURNS, Conversation
from llava_app.config import parse_config
from llava_app.errors import UserError
from llava_app.storage.records import MAX_ALL_TURNS, ConversationFileError, ConversationRecord, TurnRecord
from tests.fakes import RecordingBackend


def record(shown: int, others: int, shape: str) -> ConversationRecord:
    """``shown`` turns on the branch shown and ``others`` on other branches: each a sibling of a turn shown
    (``spread``: one per turn in turn, ``last``: all of the newest turn, as Regenerate pressed many times)."""
    turns = [TurnRecord(user=f"q{i}", assistant=f"a{i}", id=i + 1, parent=i, images=()) for i in range(shown)]
    hidden = [TurnRecord(user=f"b{j}", assistant=f"x{j}", id=shown + 1 + j,
                         parent=(j % shown) if shape == "spread" else shown - 1, images=()) for j in range(others)]
    return ConversationRecord(turns=turns, branches=hidden)


def branch_work(rec: ConversationRecord) -> None:
    """What opening such a conversation and moving around it does: restore, the "< 2/3 >" of every turn,
    a switch of the newest turn and of the first, the record written back."""
    conv = Conversation.restore(rec)
    branches.describe(conv)
    last = len(conv.turns) - 1
    branches.switch(conv, last, branches.position(conv, last)[1] - 1)
    branches.switch(conv, 0, branches.position(conv, 0)[1] - 1)
    branches.describe(conv)
    conv.to_record()


def cpu_per_call(work, arg, least_s: float) -> float:
    """CPU time per call, from calls made until they took ``least_s`` (a few milliseconds alone are mostly the
    clock's grain and the machine's noise)."""
    calls, start = 0, time.process_time()
    while (spent := time.process_time() - start) < least_s:
        work(arg)
        calls += 1
    return spent / calls


def grows_linearly(work, small, large, pairs: int = 9, least_s: float = 0.05) -> float:
    """Twice the input: the time may grow about twofold (allowing for noise), never fourfold as a quadratic
    walk does. A shared virtual machine's speed wanders by half within seconds, so the two sizes are timed
    side by side, ``pairs`` times, and the median of the pairs' ratios decides; the garbage collector waits,
    so that one of its passes falling into one side does not decide. Returns the ratio."""
    work(small)  # warm up
    ratios = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(pairs):
            ratios.append(cpu_per_call(work, large, least_s) / cpu_per_call(work, small, least_s))
    finally:
        gc.enable()
    ratio = statistics.median(ratios)
    each = ", ".join(f"{r:.1f}" for r in ratios)
    assert ratio < 3.0, f"doubling the input multiplied the time by {ratio:.1f} (pair by pair: {each})"
    return ratio


@pytest.mark.parametrize("shape", ["spread", "last"])
def test_branch_navigation_grows_linearly_with_the_turns(shape):
    half = MAX_TURNS // 2
    grows_linearly(branch_work, record(half, 3 * half, shape), record(2 * half, 6 * half, shape))


def test_a_v1_request_grows_linearly_with_its_messages(store):
    from llava_app.chat.service import ChatService
    from llava_app.web.openai.request import MAX_MESSAGES, RequestParser

    service = ChatService(RecordingBackend(), store)
    parser = RequestParser(service, parse_config([]))

    def body(n):
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"word{i}"} for i in range(n - 1)]
        return {"model": service.model_name, "messages": [*msgs, {"role": "user", "content": "last?"}]}

    assert MAX_MESSAGES >= 2000
    grows_linearly(parser.parse, body(1000), body(2000))


def test_a_conversation_stops_at_its_turn_limit_saying_so():
    rec = record(MAX_TURNS, 0, "spread")
    rec.turns.pop()
    conv = Conversation.restore(rec)
    conv.ask("one more")
    conv.answer("fine")
    with pytest.raises(UserError, match=f"reached {MAX_TURNS} turns.*Start a new chat"):
        conv.ask("and another")
    assert len(conv.turns) == MAX_TURNS and conv.turns[-1].assistant == "fine"  # nothing lost


def test_branches_stop_at_the_limit_of_all_turns():
    conv = Conversation.restore(record(10, MAX_ALL_TURNS - 10, "last"))
    with pytest.raises(UserError, match=f"already keeps {MAX_ALL_TURNS} turns"):
        conv.regenerate()
    with pytest.raises(UserError, match=f"already keeps {MAX_ALL_TURNS} turns"):
        branches.fork(conv, 3, "edited")
    assert len(conv.turns) == 10 and len(conv.hidden) == MAX_ALL_TURNS - 10


def _file(tmp_path, data, name="conversation.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_file_past_the_limits_is_refused_before_its_turns_are_read(tmp_path, store):
    from llava_app.chat.transfer import import_conversation

    data = record(1, 0, "spread").to_json()
    data["turns"] = [{"user": "q", "assistant": "a"}] * (MAX_TURNS + 1)
    with pytest.raises(ConversationFileError, match=f"has {MAX_TURNS + 1} turns shown.*at most {MAX_TURNS}"):
        import_conversation(_file(tmp_path, data), store)
    data["turns"] = data["turns"][:10]
    data["branches"] = [{"user": "q", "assistant": "a", "id": 20 + i, "parent": 1} for i in range(MAX_ALL_TURNS)]
    start = time.process_time()
    with pytest.raises(ConversationFileError, match=f"{MAX_ALL_TURNS + 10} on all its branches"):
        import_conversation(_file(tmp_path, data), store)
    assert time.process_time() - start < 1.0


def test_a_file_nested_deep_is_refused_as_not_a_conversation(tmp_path, store):
    from llava_app.chat.transfer import import_conversation

    deep = '{"format": "llava-app.conversation", "version": 2, "turns": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ConversationFileError, match="deep.json is not a conversation file"):
        import_conversation(_file(tmp_path, deep, "deep.json"), store)
