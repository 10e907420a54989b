"""The example images (drawn by assets/make_examples.py) and loading an example into a conversation."""

from __future__ import annotations

import importlib.util

import pytest
from fakes import RecordingBackend
from PIL import Image, ImageChops

from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import ASSETS_DIR, EXAMPLES, available_examples, language_of, load_example
from llava_app.chat.service import ChatService
from llava_app.errors import UserError
from llava_app.storage.images import ImageStore, load_image_file


def _script():
    spec = importlib.util.spec_from_file_location("make_examples", ASSETS_DIR / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_draws_the_committed_images(tmp_path):
    paths = _script().main(tmp_path)
    # Every committed example image is one the script draws (the screenshots are the page's, at two sizes).
    committed_examples = sorted(p.name for p in ASSETS_DIR.glob("*.png") if not p.name.startswith("screenshot"))
    assert sorted(p.name for p in paths) == committed_examples
    for path in paths:
        drawn, committed = Image.open(path).convert("RGB"), Image.open(ASSETS_DIR / path.name).convert("RGB")
        assert drawn.size == committed.size
        if path.name.startswith("scene"):  # shapes only: no font rendering that could differ by FreeType version
            assert ImageChops.difference(drawn, committed).getbbox() is None
        load_image_file(path)  # each passes the upload checks
    scene, changed = (Image.open(ASSETS_DIR / n).convert("RGB") for n in ("scene.png", "scene_changed.png"))
    assert ImageChops.difference(scene, changed).getbbox() is not None  # the comparison has differences


def test_every_example_has_its_images():
    assert [ex.key for ex in available_examples()] == [ex.key for ex in EXAMPLES]
    kinds = {len(ex.images) for ex in EXAMPLES}
    assert kinds == {1, 2} and any(ex.prelude for ex in EXAMPLES)




@pytest.fixture
def service(tmp_path):
    return ChatService(RecordingBackend(), ImageStore(tmp_path / "images"), max_images=3)


def test_examples_join_the_conversation_with_their_labels(service, image_files):
    conv = Conversation()
    service.add_images(conv, [(str(image_files[0]), "mine.png")])
    compare = next(ex for ex in EXAMPLES if ex.key == "example_compare")
    labels, question = load_example(service, conv, compare)
    assert labels == ["Image 2", "Image 3"] and question.startswith("What changed between Image 2 and Image 3?")
    assert [im.name for im in conv.images] == ["mine.png", "scene.png", "scene_changed.png"]
    # The same picture again is kept once, and the question names its existing label.
    describe = next(ex for ex in EXAMPLES if ex.key == "example_describe")
    assert load_example(service, conv, describe, "zh-CN") == (["Image 2"], "详细描述Image 2。")
    # A fourth image is over this service's limit of three: a message, the conversation unchanged.
    with pytest.raises(UserError, match="limit is 3"):
        load_example(service, conv, next(ex for ex in EXAMPLES if ex.key == "example_ocr"))
    assert len(conv.images) == 3


def test_the_follow_up_example_asks_its_first_question(service):
    conv = Conversation()
    follow = next(ex for ex in EXAMPLES if ex.prelude)
    labels, question = load_example(service, conv, follow)
    assert [t.user for t in conv.turns] == ["Which month has the highest bar in Image 1?"]
    assert conv.turns[0].assistant is None  # the page streams its answer next
    assert conv.images[0].joined_at == 0 and question.startswith("By how many")


def test_language_from_the_browser():
    assert language_of("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert language_of("zh") == "zh-CN"
    assert language_of("en-GB,en;q=0.9") == "en"
    assert language_of(None) == "en"
