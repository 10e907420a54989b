"""Reading boxes out of answers, in each family's own convention, and placing them on the right picture.

The answers quoted are the families' own: Qwen2.5-VL's OCR cookbook (QwenLM/Qwen2.5-VL
``cookbooks/ocr.ipynb``: absolute pixels, trailing commas, ``text_content``), Qwen3-VL's cookbooks
(QwenLM/Qwen3-VL ``cookbooks/omni_recognition.ipynb``: nested names; ``spatial_understanding.ipynb``: a
point; ``qwen-vl-finetune/README.md``: an object without a label), and the LLaVA-1.5 region format
("[x1, y1, x2, y2]" as fractions, two decimals).
"""

from __future__ import annotations

import pytest

from llava_app.chat import grounding, regions
from llava_app.chat.grounding import CONVENTIONS, convention_for, parse, place
from llava_app.engine.geometry import PictureGeometry
from llava_app.errors import UserError

QWEN25, QWEN3, LLAVA = CONVENTIONS["qwen2.5-vl"], CONVENTIONS["qwen3-vl"], CONVENTIONS["llava"]

QWEN25_OCR = """```json
[
    {
        "bbox_2d": [125, 169, 754, 208], "text_content": "UNIHAKKA INTERNATIONAL SDN BHD",
    },
    {
        "bbox_2d": [325, 210, 549, 238], "text_content": "01 Jun 2018 18:41",
    },
    {
        "bbox_2d": [358, 252, 518, 278], "text_content": "(867388-U)",
    },
]
```"""

QWEN3_OMNI = """```json
[
\t{
\t\t"bbox_2d": [0, 52, 477, 999],
\t\t"names": {
\t\t\t"zh": "富冈义勇",
\t\t\t"en": "Giyu Tomioka"
\t\t}
\t},
\t{"bbox_2d": [220, 54, 500, 595],
\t\t"names": {
\t\t\t"zh": "不死川实弥",
\t\t\t"en": "Sanemi Shinazugawa"
\t\t}
\t}
]
```"""

QWEN3_POINT = """```json
[
\t{"point_2d": [925, 618], "label": "point_1"}
]
```"""

QWEN3_FINETUNE = '{\n"bbox_2d": [135, 114, 1016, 672]\n}'

LLAVA_ANSWER = "The red car on the left is at [0.12, 0.45, 0.38, 0.78], and the bus: [0.55, 0.3, 0.97, 0.81]."


def test_qwen25_ocr_output_with_trailing_commas_is_read_with_its_texts():
    marks = parse(QWEN25_OCR, QWEN25)
    assert [m.coords for m in marks] == [(125, 169, 754, 208), (325, 210, 549, 238), (358, 252, 518, 278)]
    assert [m.label for m in marks] == ["UNIHAKKA INTERNATIONAL SDN BHD", "01 Jun 2018 18:41", "(867388-U)"]


def test_qwen3_objects_with_nested_names_points_and_no_label_are_read():
    marks = parse(QWEN3_OMNI, QWEN3)
    assert [(m.coords, m.label) for m in marks] == [((0, 52, 477, 999), "Giyu Tomioka"),
                                                    ((220, 54, 500, 595), "Sanemi Shinazugawa")]
    (point,) = parse(QWEN3_POINT, QWEN3)
    assert point.kind == "point" and point.coords == (925, 618) and point.label == "point_1"
    (box,) = parse(QWEN3_FINETUNE, QWEN3)
    assert box.coords == (135, 114, 1016, 672) and box.label == ""


def test_llava_fractions_are_read_with_the_words_before_them_and_other_brackets_are_not():
    marks = parse(LLAVA_ANSWER, LLAVA)
    assert [(m.coords, m.label) for m in marks] == [((0.12, 0.45, 0.38, 0.78), "red car on the left"),
                                                    ((0.55, 0.3, 0.97, 0.81), "bus")]
    assert parse("The list [2, 4, 6, 8] has four numbers.", LLAVA) == []
    assert parse(QWEN25_OCR, LLAVA) == []  # a convention reads its own syntax only


def test_an_answer_cut_mid_json_keeps_the_boxes_written_whole():
    cut = QWEN25_OCR[:QWEN25_OCR.index('"(867388-U)"')]
    assert [m.label for m in parse(cut, QWEN25)] == ["UNIHAKKA INTERNATIONAL SDN BHD", "01 Jun 2018 18:41"]
    assert parse('{"bbox_2d": [1, 2, 3]}  {"bbox_2d": "near the top"}  {"point_2d": [true, 2]}', QWEN25) == []


def test_the_convention_follows_the_architecture_then_the_served_id_and_the_flag_overrides():
    assert convention_for("qwen2_5_vl") is QWEN25
    assert convention_for("qwen3_vl_moe") is QWEN3
    assert convention_for("llava_next") is LLAVA
    assert convention_for("", "Qwen/Qwen2.5-VL-72B-Instruct-AWQ") is QWEN25
    assert convention_for("", "Qwen/Qwen3-VL-8B-Instruct") is QWEN3
    assert convention_for("", "llava-hf/llava-1.5-7b-hf") is LLAVA
    assert convention_for("", "my-org/visual-finetune") is None
    assert convention_for("", "my-org/visual-finetune", override="qwen3-vl") is QWEN3
    from llava_app.config import GROUNDING_FORMATS
    assert tuple(GROUNDING_FORMATS) == grounding.CHOICES  # the flag offers exactly the table's entries


@pytest.mark.parametrize("text,expected", [
    ('Image 1 is empty. Image 2 has the car:\n{"bbox_2d": [1, 2, 30, 40]}', [2]),
    ('Image 1 and Image 2 both have cars: {"bbox_2d": [1, 2, 30, 40]}', [None]),  # unclear: not drawn
    ('In Image 2: {"bbox_2d": [1, 2, 30, 40]}, {"bbox_2d": [5, 6, 70, 80]}. In Image 1: {"bbox_2d": [1, 2, 3, 4]}',
     [2, 2, 1]),
    ('图片2中的汽车：{"bbox_2d": [1, 2, 30, 40]}。第1张：{"bbox_2d": [1, 2, 30, 40]}', [2, 1]),
    ('Image 7 shows it: {"bbox_2d": [1, 2, 30, 40]}', [None]),  # no such picture in play
    ('{"bbox_2d": [1, 2, 30, 40]}', [None]),  # two pictures in play, none named
])
def test_each_box_goes_on_the_picture_the_answer_names_before_it(text, expected):
    assert place(text, parse(text, QWEN25), [1, 2]) == expected


def test_with_one_picture_in_play_an_unnamed_box_is_on_it():
    text = '{"bbox_2d": [1, 2, 30, 40]}'
    assert place(text, parse(text, QWEN25), [3]) == [3]


def test_boxes_map_to_the_pictures_pixels_through_the_processors_frame_and_are_clamped():
    qwen = PictureGeometry("smart_resize", factor=28, min_pixels=3136, max_pixels=12845056)
    # 640 x 480 is resized to 644 x 476: the model's 644 is the picture's 640
    (r,) = grounding.regions('{"bbox_2d": [322, 119, 644, 476], "label": "car"}', QWEN25, qwen, {1: (640, 480)})
    assert r.image == 1 and r.box == pytest.approx((320, 120, 640, 480))
    (r,) = grounding.regions('{"bbox_2d": [500, 250, 1000, 1100]}', QWEN3, None, {1: (640, 480)})
    assert r.box == pytest.approx((320, 120, 640, 480))  # past the bottom edge: clamped
    crop = PictureGeometry("center_crop", shortest_edge=336, crop=(336, 336))
    # 640 x 480 -> 448 x 336, centre crop from x=56: the crop's middle is the picture's middle
    (r,) = grounding.regions("It is at [0.25, 0.25, 0.75, 0.75].", LLAVA, crop, {1: (640, 480)})
    assert r.box == pytest.approx((200, 120, 440, 360))
    (r,) = grounding.regions('{"bbox_2d": [900, 900, 1200, 1300]}', QWEN25, qwen, {1: (640, 480)})
    assert r.image is None and r.raw == (900, 900, 1200, 1300)  # wholly off the picture: listed, not drawn


def test_raw_blocks_are_the_code_blocks_that_hold_boxes():
    text = "Here:\n" + QWEN25_OCR + "\nand some code:\n```python\nprint(1)\n```"
    blocks = grounding.raw_blocks(text, QWEN25)
    assert len(blocks) == 1 and blocks[0][2] == 3 and text[blocks[0][0]:blocks[0][1]] == QWEN25_OCR
    assert grounding.raw_blocks(text, LLAVA) == []


def test_regions_a_person_marks_are_read_checked_and_said_in_the_models_terms():
    asks = regions.read_regions('[{"image": 2, "box": [320, 360, 160, 240]}, {"image": "Image 1", "point": [5, 6]}]')
    assert asks == [regions.Ask(2, box=(160, 240, 320, 360)), regions.Ask(1, point=(5, 6))]
    for bad in ('{"image": 2}', "[1, 2]", '{"image": 2, "box": [1, 2, 3]}', "not json",
                '[{"image": 2.5, "point": [1, 2]}]'):
        with pytest.raises(UserError) as err:
            regions.read_regions(bad)
        assert "picture's own pixels" in str(err.value)
    with pytest.raises(UserError, match="outside Image 2"):
        regions.clamp_ask(regions.Ask(2, box=(700, 10, 800, 20)), 640, 480)
    qwen = PictureGeometry("smart_resize", factor=28, min_pixels=3136, max_pixels=12845056)
    ask = regions.Ask(2, box=(320, 120, 640, 480))
    said = regions.region_text(ask, "Image 2", QWEN25, qwen, 640, 480)
    assert said == 'Image 2, region {"bbox_2d": [322, 119, 644, 476]}'  # the pixels of the resized picture
    said = regions.region_text(ask, "Image 2", QWEN3, None, 640, 480)
    assert said == 'Image 2, region {"bbox_2d": [500, 250, 1000, 1000]}'  # the 0-1000 grid
    assert regions.region_text(regions.Ask(2, point=(320, 240)), "Image 2", LLAVA, PictureGeometry(), 640, 480) \
        == "Image 2, point [0.50, 0.50]"
    crop = PictureGeometry("center_crop", shortest_edge=336, crop=(336, 336))
    assert regions.region_text(regions.Ask(2, box=(0, 0, 40, 480)), "Image 2", LLAVA, crop, 640, 480) is None
