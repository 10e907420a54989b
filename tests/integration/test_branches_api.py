"""Edits, branches and earlier chats through gradio_client, against a launched server on the tiny model."""

from __future__ import annotations

import pytest
from conftest import launched_app
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache, local_backend):
    from llava_app.config import Config

    data = tmp_path_factory.mktemp("data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=8)
    with launched_app(config, local_backend("tiny-random")) as (url, app, _):
        yield url, app


def test_edit_an_earlier_turn_switch_back_and_regenerate_keeps_siblings(server, photos):
    """(``photos``: pictures new to this run, so no other test using the shared engine has their features.)"""
    image_files = photos
    url, app = server
    client = Client(url, verbose=False)
    client.predict("What is in Image 1?", [handle_file(str(image_files[0]))], [], api_name="/chat")
    client.predict("And in Image 2?", [handle_file(str(image_files[1]))], [], api_name="/chat")
    third = client.predict("Which is larger?", [], [], api_name="/chat")

    # turn 2 again, without Image 2 but with a third picture (it becomes Image 3)
    answer = client.predict(1, "And in Image 3?", [handle_file(str(image_files[2]))], [2], api_name="/edit")
    assert isinstance(answer, str)
    ctx = client.predict(api_name="/context")
    assert [t["user"] for t in ctx["turns"]] == ["What is in Image 1?", "And in Image 3?"]
    assert ctx["turns"][1]["assistant"] == answer
    assert [b["count"] for b in ctx["branches"]] == [1, 2] and ctx["branches"][1]["index"] == 1
    assert [im["label"] for im in ctx["images"]] == ["Image 1", "Image 3"]
    assert ctx["prompt_image_labels"] == ["Image 1", "Image 3"]
    # the engine read turn 1 from its cache and passed neither of its pictures through the vision tower again
    assert app.service.backend.last_run.reused_tokens > 0 and app.service.backend.last_run.images_encoded == 1

    ctx = client.predict(1, 0, api_name="/branch")
    assert [t["user"] for t in ctx["turns"]] == ["What is in Image 1?", "And in Image 2?", "Which is larger?"]
    assert ctx["turns"][2]["assistant"] == third and [im["label"] for im in ctx["images"]] == ["Image 1", "Image 2"]

    with pytest.raises(Exception, match="no number 5"):
        client.predict(1, 4, api_name="/branch")
    with pytest.raises(Exception, match="no turn 10"):
        client.predict(9, "nothing here", [], [], api_name="/edit")


def test_earlier_chats_are_listed_and_reopened(server):
    url, _ = server
    client = Client(url, verbose=False)
    client.predict("The first chat", [], [], api_name="/chat")
    client.predict(api_name="/reset")
    client.predict("The second chat", [], [], api_name="/chat")
    chats = client.predict(api_name="/conversations")
    assert [c["title"] for c in chats] == ["The second chat", "The first chat"]
    assert [c["current"] for c in chats] == [True, False]
    ctx = client.predict(chats[1]["id"], api_name="/open")
    assert [t["user"] for t in ctx["turns"]] == ["The first chat"]
    assert [t["user"] for t in client.predict(api_name="/context")["turns"]] == ["The first chat"]
    assert [c["current"] for c in client.predict(api_name="/conversations")] == [False, True]
    # another client sees none of them, and cannot open them
    other = Client(url, verbose=False)
    assert other.predict(api_name="/conversations") == []
    with pytest.raises(Exception, match="not in this browser's list"):
        other.predict(chats[0]["id"], api_name="/open")


def test_a_refused_attach_leaves_the_other_branch_its_picture(server, image_files, tmp_path):
    """An edit drops Image 1 on a new branch (it now lives only on the old one); a /chat sending that picture
    again with a file that is refused attaches neither, and the old branch still has its picture."""
    url, _ = server
    client = Client(url, verbose=False)
    client.predict("What is in Image 1?", [handle_file(str(image_files[0]))], [], api_name="/chat")
    client.predict(0, "Nothing to look at", [], [1], api_name="/edit")  # turn 1 again, without Image 1
    assert client.predict(api_name="/context")["images"] == []
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a picture at all")
    with pytest.raises(Exception, match="notes.png"):
        client.predict("And now?", [handle_file(str(image_files[0])), handle_file(str(bad))], [], api_name="/chat")
    ctx = client.predict(api_name="/context")
    assert ctx["images"] == [] and [t["user"] for t in ctx["turns"]] == ["Nothing to look at"]
    ctx = client.predict(0, 0, api_name="/branch")  # back to the first version of turn 1
    assert [t["user"] for t in ctx["turns"]] == ["What is in Image 1?"]
    assert [im["label"] for im in ctx["images"]] == ["Image 1"]
    # sent again on its own, the picture keeps its label
    client.predict(0, 1, api_name="/branch")
    client.predict("Look again", [handle_file(str(image_files[0]))], [], api_name="/chat")
    assert [im["label"] for im in client.predict(api_name="/context")["images"]] == ["Image 1"]
