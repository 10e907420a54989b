"""/v1's one-off conversations, built by the service from a client's turns and pictures, then forgotten."""

from __future__ import annotations

from fakes import RecordingBackend
from PIL import Image

from llava_app.chat.one_off import ClientTurn
from llava_app.chat.service import ChatService
from llava_app.engine.base import GenerationParams


def picture(color: str) -> Image.Image:
    return Image.new("RGB", (32, 24), color)


def test_pictures_keep_their_labels_numbers_and_the_others_take_free_ones(store):
    service = ChatService(RecordingBackend(), store)
    conv = service.one_off_conversation([
        ClientTurn("What is in Image 3?", [(3, picture("red")), (None, picture("blue"))], answer="A red square."),
        ClientTurn("And these?", [(3, picture("green")), (None, picture("white"))]),  # 3 again: a free number
    ])
    assert [(im.number, im.joined_at, im.name) for im in conv.images] == [
        (3, 0, "image 1"), (1, 0, "image 2"), (2, 1, "image 3"), (4, 1, "image 4")]
    assert [(t.user, t.assistant) for t in conv.turns] == [("What is in Image 3?", "A red square."),
                                                          ("And these?", None)]
    assert all(store.path_for(im.sha256).exists() for im in conv.images)


def test_an_answered_one_off_conversation_is_forgotten_at_once(store):
    backend = RecordingBackend().enqueue("It is ", "red.")
    service = ChatService(backend, store, stream_interval=0)
    conv = service.one_off_conversation([ClientTurn("What colour?", [(None, picture("red"))])])
    assert list(service.stream_answer(conv, GenerationParams(max_new_tokens=5)))[-1] == "It is red."
    service.forget(conv)
    assert backend.forgotten == [conv.id] and conv.id not in {c.id for c in service.sessions.live()}


def test_the_window_is_the_served_models(store):
    backend = RecordingBackend()
    service = ChatService(backend, store)
    assert (service.model_name, service.context_length) == ("recording-fake", 4096)
    backend.context_length = 0  # a remote server that does not say
    assert service.context_length is None
