"""Boxes an answer points with, drawn on the right picture of two, and a region the person marks, in Chromium.

The app talks to a scripted OpenAI-compatible engine (``--backend openai``) that serves
"Qwen/Qwen2.5-VL-7B-Instruct": its answer holds a Qwen2.5-VL box (JSON, pixels of the picture as
Qwen's processor resizes it), so the app reads the convention from the model id, as for a real vLLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ask_and_wait, launched_app, watch_gradio
from fake_openai import FakeOpenAIServer
from PIL import Image

from llava_app.engine.geometry import smart_resize

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
SIZE = (640, 480)  # the pictures' size; Qwen2.5-VL's processor resizes them to 644 x 476
CAR = (320, 120, 480, 360)  # where the car is on Image 2, in its own pixels


def resized_box(box: tuple[int, ...]) -> list[int]:
    """A box of a 640 x 480 picture in the pixels of the picture as Qwen2.5-VL's processor resizes it."""
    h, w = smart_resize(SIZE[1], SIZE[0], 28, 3136, 12845056)
    return [round(box[0] * w / SIZE[0]), round(box[1] * h / SIZE[1]), round(box[2] * w / SIZE[0]),
            round(box[3] * h / SIZE[1])]


@pytest.fixture(scope="module")
def engine():
    server = FakeOpenAIServer(models=(MODEL,))
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    from llava_app.config import Config

    config = Config(backend="openai", base_url=engine.url, model=MODEL,
                    data_dir=str(tmp_path_factory.mktemp("pointing")), max_new_tokens=64)
    with launched_app(config) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pointing-pictures")
    paths = []
    for i, color in enumerate(["#36c", "#eee"], start=1):
        picture = Image.new("RGB", SIZE, color)
        if i == 2:  # a red "car" where the answer says it is
            picture.paste((200, 30, 30), CAR)
        path = folder / f"street{i}.png"
        picture.save(path)
        paths.append(path)
    return paths


def open_page(browser, url: str, size: tuple[int, int]):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    watch_gradio(page)
    page.goto(url)
    page.wait_for_selector("#question textarea", timeout=WAIT_MS)
    page.wait_for_function("() => localStorage.getItem('llava-app-conversation')", timeout=WAIT_MS)
    return page


def ask(page, text: str) -> None:
    """Send a question and wait until its answer (and its footer) is written out."""
    ask_and_wait(page, text, WAIT_MS)


def relative(inner: dict, outer: dict) -> list[float]:
    """``inner``'s box as fractions of ``outer``'s (bounding boxes)."""
    return [(inner["x"] - outer["x"]) / outer["width"], (inner["y"] - outer["y"]) / outer["height"],
            (inner["x"] + inner["width"] - outer["x"]) / outer["width"],
            (inner["y"] + inner["height"] - outer["y"]) / outer["height"]]


def test_the_box_is_drawn_on_the_picture_the_answer_names_and_a_region_drawn_large_is_asked_about(
        browser, server, engine, pictures):
    page = open_page(browser, server, (1366, 768))
    page.locator("#gallery input[type=file]").set_input_files([str(p) for p in pictures])
    page.wait_for_function("() => document.querySelectorAll('#gallery .caption-label').length === 2",
                           timeout=WAIT_MS)
    box = resized_box(CAR)
    engine.words = [f'Image 1 is empty. Image 2 has the car:\n```json\n[\n\t{{"bbox_2d": {json.dumps(box)}, '
                    f'"label": "red car"}}\n]\n```\nThat is the only one.']
    ask(page, "Where is the red car?")

    # Under the answer: Image 2 (not Image 1), with one box where the car is, labelled; the JSON folded.
    figures = page.locator("#chatbot .boxes-fig")
    assert figures.count() == 1
    assert figures.first.locator("figcaption b").inner_text() == "Image 2"
    assert "red car" in figures.first.locator(".box-label").inner_text()
    page.wait_for_function("() => document.querySelector('#chatbot .boxes-pic img').naturalWidth > 0",
                           timeout=WAIT_MS)
    drawn = relative(figures.first.locator(".box").bounding_box(), figures.first.locator("img").bounding_box())
    expected = [CAR[0] / SIZE[0], CAR[1] / SIZE[1], CAR[2] / SIZE[0], CAR[3] / SIZE[1]]
    assert all(abs(a - b) < 0.02 for a, b in zip(drawn, expected, strict=True)), (drawn, expected)
    raw = page.locator("#chatbot details.boxes-raw")
    assert raw.count() == 1 and not raw.evaluate("el => el.open")  # the numbers, folded behind one line
    assert "1 box as the model wrote it" in raw.locator("summary").inner_text()
    assert "That is the only one." in page.locator("#chatbot").inner_text()
    # Hovering the label lights its box.
    figures.first.locator(".box-label").hover()
    page.wait_for_function("() => document.querySelector('#chatbot .boxes-fig .box').classList.contains('lit')")

    # A click opens it large, with the box; a box dragged there becomes a chip, sent with the next question.
    figures.first.locator("img").click()
    large = page.locator("#lightbox .lightbox-pic")
    large.wait_for(state="visible", timeout=WAIT_MS)
    assert page.locator("#lightbox .box").count() == 1
    area = page.locator("#lightbox .lightbox-pic img").bounding_box()
    assert area["width"] > 400  # large, not the thumbnail
    ask_button = page.locator("#lightbox .lightbox-ask")
    assert ask_button.is_disabled()
    start = (area["x"] + area["width"] * 0.25, area["y"] + area["height"] * 0.5)
    end = (area["x"] + area["width"] * 0.75, area["y"] + area["height"] * 0.75)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=5)
    page.mouse.up()
    ask_button.click()
    page.locator("#lightbox").wait_for(state="detached")
    assert page.locator("#region-chips .region-chip").inner_text().startswith("Image 2 · region")
    chip, box = page.locator("#region-chips").bounding_box(), page.locator("#composer").bounding_box()
    assert abs(chip["y"] + chip["height"] / 2 - box["y"]) <= 2 and chip["x"] >= box["x"] - 1  # on the box's edge
    strip = page.locator("#gallery .caption-label").last.bounding_box()
    assert strip["y"] + strip["height"] <= chip["y"]  # the strip's labels stay readable
    page.fill("#question textarea", "What is in this part?")
    engine.words = ["It is the lower right of the street."]
    ask(page, "What is in this part?")
    assert page.locator("#region-chips .region-chip").count() == 0  # the chip went with the question
    sent = engine.requests[-1]["messages"][-1]["content"]
    said = next(part["text"] for part in sent if part["type"] == "text" and "region" in part["text"])
    told = json.loads(said.split("region ", 1)[1].rstrip(")"))["bbox_2d"]
    want = resized_box((160, 240, 480, 360))  # the dragged quarter, in Qwen2.5-VL's resized pixels
    assert all(abs(a - b) <= 4 for a, b in zip(told, want, strict=True)), (told, want)
    assert "Image 2, region" in page.locator("#chatbot").inner_text()  # the question says what was sent

    # A reload shows the same: the boxes come back from the answer and the picture.
    page.reload()
    page.wait_for_selector("#chatbot .boxes-fig", timeout=WAIT_MS)
    assert page.locator("#chatbot .boxes-fig figcaption b").inner_text() == "Image 2"


def test_on_a_phone_the_boxes_fit_and_a_tap_marks_a_point(browser, server, engine, pictures):
    page = open_page(browser, server, (390, 844))
    page.locator("#gallery input[type=file]").set_input_files([str(pictures[1])])
    page.wait_for_function("() => document.querySelectorAll('#gallery .caption-label').length === 1",
                           timeout=WAIT_MS)
    engine.words = [f'```json\n[{{"bbox_2d": {json.dumps(resized_box(CAR))}, "label": "red car"}}]\n```']
    ask(page, "Find the car")  # one picture in play: the box goes on it, though the answer names none
    figure = page.locator("#chatbot .boxes-fig")
    assert figure.locator("figcaption b").inner_text() == "Image 1"
    fig_box = figure.bounding_box()
    assert fig_box["x"] >= 0 and fig_box["x"] + fig_box["width"] <= 390  # no sideways scrolling
    page.wait_for_function("() => document.querySelector('#chatbot .boxes-pic img').naturalWidth > 0")
    drawn = relative(figure.locator(".box").bounding_box(), figure.locator("img").bounding_box())
    expected = [CAR[0] / SIZE[0], CAR[1] / SIZE[1], CAR[2] / SIZE[0], CAR[3] / SIZE[1]]
    assert all(abs(a - b) < 0.02 for a, b in zip(drawn, expected, strict=True)), (drawn, expected)
    figure.locator("img").click()
    area = page.locator("#lightbox .lightbox-pic img").bounding_box()
    assert area["x"] >= 0 and area["x"] + area["width"] <= 390
    page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
    page.locator("#lightbox .lightbox-ask").click()
    assert page.locator("#region-chips .region-chip").inner_text().startswith("Image 1 · point")
    engine.words = ["The middle of the picture."]
    ask(page, "And here?")
    sent = engine.requests[-1]["messages"][-1]["content"]
    said = next(part["text"] for part in sent if part["type"] == "text" and "point_2d" in part["text"])
    point = json.loads(said.split("region ", 1)[1].rstrip(")"))["point_2d"]
    assert abs(point[0] - 322) <= 4 and abs(point[1] - 238) <= 4  # the centre of 644 x 476
