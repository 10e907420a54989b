"""Pointing through the service: boxes of an answer on their pictures, regions sent with a question.

Answers with boxes come from the recording fake (a tiny model writes random words); the fake
reports the architecture a real checkpoint's config sets (``model_type``), so the convention is the
one a real Qwen2.5-VL or LLaVA would bring.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import attach_file
from fakes import RecordingBackend
from PIL import Image

from llava_app.chat.conversation import Conversation
from llava_app.chat.regions import Ask
from llava_app.chat.service import ChatService
from llava_app.engine.base import GenerationParams
from llava_app.errors import UserError
from llava_app.storage.export import export_json, to_markdown


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for i, (size, color) in enumerate([((640, 480), "#36c"), ((300, 600), "#eee")], start=1):
        path = tmp_path / f"pic{i}.png"
        Image.new("RGB", size, color).save(path)
        paths.append(path)
    return paths


def service_for(store, model_type: str = "", model_name: str = "recording-fake"
                ) -> tuple[ChatService, RecordingBackend]:
    backend = RecordingBackend()
    backend.model_type, backend.model_name = model_type, model_name
    return ChatService(backend, store, stream_interval=0), backend


def answered(service, conv, question: str, answer: str, regions=()) -> None:
    service.backend.enqueue(answer)
    service.ask(conv, question, regions)
    list(service.stream_answer(conv, GenerationParams(max_new_tokens=50)))


def test_an_answers_boxes_are_on_the_picture_it_names_in_that_pictures_pixels(store, pictures):
    service, _ = service_for(store, "qwen2_5_vl")
    conv = Conversation()
    for path in pictures:
        attach_file(conv, store, path)
    # Qwen2.5-VL resizes 300 x 600 to 308 x 588: its box in those pixels
    answered(service, conv, "Where is the door?",
             'Image 1 has no door. Image 2 does:\n```json\n[{"bbox_2d": [77, 147, 231, 588], "label": "door"}]\n```')
    (door,) = service.regions(conv)
    assert door.as_dict() == {"image": "Image 2", "label": "door", "box": [75, 150, 225, 600]}
    answered(service, conv, "And the windows?", '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "window"}]\n```')
    (window,) = service.regions(conv)
    assert window.as_dict() == {"image": None, "label": "window", "coords": [1, 2, 30, 40]}  # which picture?
    assert [r.as_dict()["image"] for r in service.regions(conv, 0)] == ["Image 2"]  # earlier turns stay readable
    with pytest.raises(UserError, match="no turn 5"):
        service.regions(conv, 5)


def test_a_model_without_a_convention_reads_no_boxes(store, pictures):
    service, _ = service_for(store)
    conv = Conversation()
    attach_file(conv, store, pictures[0])
    answered(service, conv, "Where?", '{"bbox_2d": [1, 2, 30, 40], "label": "x"}')
    assert service.regions(conv) == []


def test_a_region_reaches_the_model_in_its_convention_and_stays_in_the_question(store, pictures):
    service, backend = service_for(store, "qwen3_vl")
    conv = Conversation()
    for path in pictures:
        attach_file(conv, store, path)
    answered(service, conv, "What is this?", "A door.", [Ask(2, box=(75, 150, 225, 600))])
    said = '(Image 2, region {"bbox_2d": [250, 250, 750, 1000]})'
    assert conv.turns[-1].user == "What is this?\n" + said
    sent = backend.requests[-1].messages[-1]["content"][-1]["text"]
    assert sent.endswith(said)  # what the model was given, as "What the model sees" shows it
    assert json.loads(said.split("region ")[1].rstrip(")"))["bbox_2d"] == [250, 250, 750, 1000]


def test_a_model_with_no_way_to_take_a_region_gets_it_cut_out_as_a_picture_of_its_own(store, pictures):
    service, backend = service_for(store)
    conv = Conversation()
    for path in pictures:
        attach_file(conv, store, path)
    answered(service, conv, "Describe this part.", "Grey.", [Ask(1, box=(100, 50, 300, 250))])
    cut = conv.images[-1]
    assert (cut.label, cut.width, cut.height, cut.joined_at) == ("Image 3", 200, 200, 0)
    assert conv.turns[-1].user.endswith("(Image 3 is a region of Image 1 (pixels 100, 50, 300, 250))")
    labels = [p["ref"].label for p in backend.requests[-1].messages[-1]["content"] if p["type"] == "image"]
    assert labels == ["Image 1", "Image 2", "Image 3"]  # the cut-out goes with the question, labelled
    assert store.open(cut.sha256).getpixel((10, 10)) == (0x33, 0x66, 0xCC)


def test_a_refused_region_leaves_the_conversation_as_it_was(store, pictures):
    service, _ = service_for(store)
    conv = Conversation()
    attach_file(conv, store, pictures[0])
    for bad, message in [(Ask(4, box=(0, 0, 10, 10)), "no Image 4"),
                         (Ask(1, box=(700, 10, 800, 20)), "outside Image 1")]:
        with pytest.raises(UserError, match=message):
            service.ask(conv, "What is this?", [Ask(1, point=(5, 5)), bad])  # the first would be cut out
        assert conv.turns == [] and [im.label for im in conv.images] == ["Image 1"]


def test_exports_and_saved_records_keep_the_boxes_derived_from_the_answer(store, pictures):
    service, _ = service_for(store, "qwen2_5_vl")
    conv = Conversation()
    attach_file(conv, store, pictures[1])
    answered(service, conv, "Where is the door?", '{"bbox_2d": [77, 147, 231, 588], "label": "door"}')
    record = conv.to_record(model="Qwen/Qwen2.5-VL-7B-Instruct")
    regions = service.record_regions(record)
    assert regions == [[{"image": "Image 1", "label": "door", "box": [75, 150, 225, 600]}]]
    assert "- Image 1, door: box [75, 150, 225, 600]" in to_markdown(record, regions=regions)
    data = export_json(record, embed_images=False, regions=regions)
    assert data["turns"][0]["regions"] == regions[0]
    read = dataclasses.replace(type(record).from_json(data), files=record.files)  # an import reads past them
    restored = Conversation.restore(read)
    assert service.regions(restored) == service.regions(conv)


@pytest.mark.parametrize("preset,box,said", [
    # LLaVA sees the centre 480 x 480 of a 640 x 480 picture (its crop): x 200-440 is its middle half
    ("tiny-random", (200, 0, 440, 480), "(Image 1, region [0.25, 0.00, 0.75, 1.00])"),
    # Qwen2.5-VL sees it resized to 644 x 476: the right half, in those pixels
    ("tiny-faithful-qwen2.5-vl", (320, 0, 640, 480), '(Image 1, region {"bbox_2d": [322, 0, 644, 476]})'),
])
def test_the_local_engine_frames_a_region_as_its_own_processor_does(local_backend, preset, box, said, pictures):
    backend = local_backend(preset)
    service = ChatService(backend, backend.images, stream_interval=0)
    conv = Conversation()
    attach_file(conv, backend.images, pictures[0])
    service.ask(conv, "What is there?", [Ask(1, box=box)])
    assert conv.turns[-1].user.endswith(said)
    assert service.preview(conv).text.count(said) == 1  # what the model is given, as the panel shows it


def test_grounding_overrides_what_the_model_says_it_is(store, pictures):
    backend = RecordingBackend()  # a fine-tune whose name says nothing
    service = ChatService(backend, store, stream_interval=0, grounding="llava")
    conv = Conversation()
    attach_file(conv, store, pictures[0])
    answered(service, conv, "Where?", "The sky is at [0.0, 0.0, 1.0, 0.5].")
    # LLaVA's default frame (CLIP's 336 centre crop) shows the middle 480 x 480 of this 640 x 480 picture
    assert [r.as_dict() for r in service.regions(conv)] == [{"image": "Image 1", "label": "sky",
                                                             "box": [80, 0, 560, 240]}]
    off = ChatService(RecordingBackend(), store, grounding="none")
    off.backend.model_type = "qwen2_5_vl"
    assert off.pointing.convention() is None
    with pytest.raises(ValueError, match="unknown grounding"):
        ChatService(RecordingBackend(), store, grounding="florence")
