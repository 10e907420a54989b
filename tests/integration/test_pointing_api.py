"""Pointing through the API of a launched app in front of a scripted OpenAI-compatible engine.

The engine serves "Qwen/Qwen3-VL-8B-Instruct" and answers with a Qwen3-VL box (the 0-1000 grid),
so the app takes the convention from the remote model's id, as in front of a real vLLM: ``/regions``
gives the box in the picture's pixels, ``/chat(..., regions=...)`` sends a region in Qwen3-VL's terms,
and the share page draws the box.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from conftest import launched_app
from fake_openai import FakeOpenAIServer
from gradio_client import Client, handle_file
from PIL import Image

MODEL = "Qwen/Qwen3-VL-8B-Instruct"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from llava_app.config import Config

    engine = FakeOpenAIServer(models=(MODEL,))
    config = Config(backend="openai", base_url=engine.url, model=MODEL, share_links=True,
                    data_dir=str(tmp_path_factory.mktemp("pointing-api")), max_new_tokens=64)
    with launched_app(config) as (url, _, _):
        yield SimpleNamespace(url=url, engine=engine)
    engine.close()


@pytest.fixture
def two_pictures(tmp_path):
    paths = []
    for i, (size, color) in enumerate([((640, 480), "#36c"), ((400, 800), "#eee")], start=1):
        path = tmp_path / f"street{i}.png"
        Image.new("RGB", size, color).save(path)
        paths.append(path)
    return paths


def test_regions_gives_each_box_on_its_picture_and_chat_sends_a_region_in_the_models_terms(server, two_pictures):
    client = Client(server.url, verbose=False)
    server.engine.words = ['Image 2 shows the bus:\n```json\n[{"bbox_2d": [100, 250, 600, 1000], "label": "bus"}, '
                           '{"point_2d": [500, 500], "label": "driver"}]\n```']
    client.predict("Where is the bus?", [handle_file(str(p)) for p in two_pictures], [], [], api_name="/chat")
    regions = client.predict(-1, api_name="/regions")
    assert regions == [{"image": "Image 2", "label": "bus", "box": [40, 200, 240, 800]},
                       {"image": "Image 2", "label": "driver", "point": [200, 400]}]

    server.engine.words = ["It is a wheel."]
    answer = client.predict("What is this?", [], [], [{"image": 1, "box": [320, 240, 640, 480]}], api_name="/chat")
    assert answer.strip() == "It is a wheel."
    sent = server.engine.requests[-1]["messages"][-1]["content"]
    said = [part["text"] for part in sent if part["type"] == "text"][-1]
    assert said.endswith('(Image 1, region {"bbox_2d": [500, 500, 1000, 1000]})')
    assert client.predict(0, api_name="/regions") == regions  # an earlier turn, by its number
    assert client.predict(-1, api_name="/regions") == []  # this answer points at nothing

    with pytest.raises(Exception, match="picture's own pixels"):
        client.predict("And this?", [], [], [{"image": 1, "box": "the left half"}], api_name="/chat")
    with pytest.raises(Exception, match="no Image 9"):
        client.predict("And this?", [], [], [{"image": 9, "point": [1, 1]}], api_name="/chat")
    context = client.predict(api_name="/context")
    assert len(context["turns"]) == 2  # the refused questions left nothing behind

    shared = client.predict(api_name="/share")
    page = httpx.get(server.url.rstrip("/") + shared["url"]).text
    assert "class='box'" in page and "left:10.00%;top:25.00%;width:50.00%;height:75.00%" in page
    assert json.dumps("bus")[1:-1] in page
    assert "<details><summary>2 boxes as the model wrote them</summary>```json" in page  # folded, as in the chat
