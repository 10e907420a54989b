"""Sessions: which conversations are live, and the end of those that are not (clock given, no sleeping)."""

from __future__ import annotations

import gc

from llava_app.chat.conversation import Conversation
from llava_app.chat.sessions import Sessions


def make(ttl=10.0, busy=lambda conv_id: False, grace=None):
    ended: list[str] = []
    gone: list[str] = []
    sessions = Sessions(ended.append, ttl_s=ttl, busy=busy, close_grace_s=grace)
    sessions.on_client_gone = gone.append
    return sessions, ended, gone


def test_an_idle_conversation_ends_after_its_time_to_live_and_not_before(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("llava_app.chat.sessions.time.monotonic", lambda: now[0])
    sessions, ended, _ = make(ttl=10)
    conv = Conversation()
    sessions.touch(conv)
    assert sessions.reap(now=1009.9) == [] and ended == []
    now[0] = 1005.0
    sessions.touch(conv)  # used again: its clock restarts
    assert sessions.reap(now=1014.9) == []
    assert sessions.reap(now=1015.0) == [conv.id] and ended == [conv.id]
    assert len(sessions) == 0 and sessions.live() == []
    assert sessions.reap(now=2000.0) == []  # ended once only


def test_a_busy_conversation_is_not_ended_for_idleness(monkeypatch):
    monkeypatch.setattr("llava_app.chat.sessions.time.monotonic", lambda: 0.0)
    busy = {"yes"}
    sessions, ended, _ = make(ttl=1, busy=lambda conv_id: "yes" in busy)
    conv = Conversation()
    sessions.touch(conv)
    assert sessions.reap(now=100.0) == []
    busy.clear()
    assert sessions.reap(now=100.0) == [conv.id] and ended == [conv.id]


def test_closing_a_client_ends_its_conversations_only_and_frees_it_after_the_grace(monkeypatch):
    monkeypatch.setattr("llava_app.chat.sessions.time.monotonic", lambda: 0.0)
    sessions, ended, gone = make(ttl=100, grace=5)
    mine, other = Conversation(), Conversation()
    sessions.touch(mine, client="tab-a")
    sessions.touch(other, client="tab-b")
    assert sessions.close_client("tab-a") is True
    assert ended == [mine.id] and [c.id for c in sessions.live()] == [other.id]
    assert sessions.reap(now=4.9) == [] and gone == []  # a reload may still come back
    sessions.reap(now=5.0)
    assert gone == ["tab-a"]
    assert sessions.close_client("tab-a") is False  # already gone


def test_a_client_that_comes_back_within_the_grace_is_kept(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("llava_app.chat.sessions.time.monotonic", lambda: now[0])
    sessions, _, gone = make(ttl=100, grace=5)
    sessions.touch(Conversation(), client="tab")
    sessions.close_client("tab")
    now[0] = 2.0
    back = Conversation()
    sessions.touch(back, client="tab")  # the reloaded page
    sessions.reap(now=50.0)
    assert gone == [] and [c.id for c in sessions.live()] == [back.id]


def test_a_conversation_nobody_holds_any_more_ends_at_the_next_reap():
    sessions, ended, _ = make(ttl=1000)
    conv = Conversation()
    sessions.touch(conv)
    conv_id = conv.id
    del conv
    gc.collect()
    assert sessions.reap() == [conv_id] and ended == [conv_id]


def test_images_in_use_are_those_of_live_conversations():
    sessions, _, _ = make()
    a, b = Conversation(), Conversation()
    a.add_image("aa", "/x/aa.png", 1, 1)
    b.add_image("bb", "/x/bb.png", 1, 1)
    b.add_image("aa", "/x/aa.png", 1, 1)
    sessions.touch(a)
    sessions.touch(b)
    assert sessions.images_in_use() == {"aa", "bb"}
    sessions.end(a.id)
    assert sessions.images_in_use() == {"aa", "bb"}  # b still holds both
    sessions.end(b.id)
    assert sessions.images_in_use() == set()
