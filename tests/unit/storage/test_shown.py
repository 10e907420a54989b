"""The pictures the page is given: links under a conversation's secret folder, made on demand, swept by age."""

from __future__ import annotations

import os

import pytest

from llava_app.chat.conversation import Conversation
from llava_app.storage.shown import TOUCH_EVERY_S, ShownPictures


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_picture_is_linked_under_its_conversations_folder_once(tmp_path):
    source = tmp_path / "store" / "ab" / ("ab" * 32 + ".png")
    source.parent.mkdir(parents=True)
    source.write_bytes(b"picture bytes")
    shown = ShownPictures(tmp_path / "shown")
    key = Conversation().view_key
    path = shown.path(key, source)
    assert path == str(tmp_path / "shown" / key / source.name)
    assert open(path, "rb").read() == b"picture bytes"
    assert os.stat(path).st_ino == source.stat().st_ino  # a hard link: no bytes copied
    assert shown.path(key, source) == path  # made once
    other = Conversation().view_key
    assert other != key and len(key) >= 24 and shown.path(other, source) != path  # one folder per conversation


@pytest.mark.parametrize("key", ["", "..", "../images", "a/b", "short", "x" * 65])
def test_only_a_conversations_own_key_names_a_folder(tmp_path, key):
    with pytest.raises(ValueError):
        ShownPictures(tmp_path).path(key, tmp_path / "p.png")


def test_a_gone_picture_is_shown_missing_not_an_error(tmp_path):
    shown = ShownPictures(tmp_path / "shown")
    path = shown.path(Conversation().view_key, tmp_path / "gone.png")
    assert not os.path.exists(path)


def test_folders_unused_for_a_while_are_swept_and_come_back_when_shown(tmp_path):
    source = tmp_path / "p.png"
    source.write_bytes(b"x")
    clock = Clock()
    shown = ShownPictures(tmp_path / "shown", clock=clock)
    old, fresh = Conversation().view_key, Conversation().view_key
    old_path = shown.path(old, source)
    clock.now += 7200
    shown.path(fresh, source)
    assert shown.sweep(3600) == 1
    assert not os.path.exists(old_path) and (tmp_path / "shown" / fresh).exists()
    clock.now += TOUCH_EVERY_S + 1
    assert shown.path(old, source) == old_path and os.path.exists(old_path)  # drawn again: linked again
