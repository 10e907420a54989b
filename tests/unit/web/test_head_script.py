"""``HeadScript``: the script that must run before Gradio's goes first in the head of Gradio's pages only."""

from __future__ import annotations

import gzip

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from llava_app.web.server import HEAD_SCRIPT, HeadScript

GRADIO_PAGE = ('<!doctype html>\n<html>\n\t<head>\n\t\t<meta charset="utf-8" />\n'
               '\t\t<script type="module" crossorigin src="./assets/index-x.js"></script>\n\t</head>\n'
               '\t<body><gradio-app eager="true"></gradio-app></body>\n</html>\n')


def client(script: str = "window.first = 1;") -> TestClient:
    def page(request):
        return HTMLResponse(GRADIO_PAGE)

    def streamed(request):
        chunks = [GRADIO_PAGE[:30].encode(), GRADIO_PAGE[30:90].encode(), GRADIO_PAGE[90:].encode()]
        return StreamingResponse(iter(chunks), media_type="text/html")

    routes = [Route("/", page, methods=["GET", "POST", "HEAD"]), Route("/streamed", streamed),
              Route("/other", lambda r: HTMLResponse("<html><head></head><body>a snapshot</body></html>")),
              Route("/config", lambda r: JSONResponse({"head": "<head>"})),
              Route("/zipped", lambda r: Response(gzip.compress(GRADIO_PAGE.encode()), media_type="text/html",
                                                  headers={"content-encoding": "gzip"}))]
    return TestClient(HeadScript(Starlette(routes=routes), script))


@pytest.mark.parametrize("path", ["/", "/streamed"])
def test_the_script_comes_first_in_the_head_of_a_gradio_page_with_its_length(path):
    response = client().get(path)

    assert response.status_code == 200
    body = response.text
    assert body.count("window.first = 1;") == 1
    assert body.index("<script>window.first = 1;</script>") == body.index("<head>") + len("<head>")
    assert body.index("window.first") < body.index('src="./assets/index-x.js"')  # before Gradio's module
    assert body.replace("<script>window.first = 1;</script>", "") == GRADIO_PAGE  # nothing else changes
    if path == "/":
        assert int(response.headers["content-length"]) == len(response.content)


def test_other_responses_pass_as_they_came():
    c = client()
    assert c.get("/other").text == "<html><head></head><body>a snapshot</body></html>"  # not a Gradio page
    assert c.get("/config").json() == {"head": "<head>"}
    assert c.post("/").text == GRADIO_PAGE
    assert c.get("/zipped").text == GRADIO_PAGE  # compressed: left alone


def test_the_apps_script_is_the_tracker_fix_and_closes_no_tag_early():
    """What the app puts there: the fix for Gradio's status tracker loop, which an HTML parser reads whole."""
    assert "statustracker" in HEAD_SCRIPT and "requestAnimationFrame" in HEAD_SCRIPT
    assert "</script" not in HEAD_SCRIPT.lower()
    body = client(HEAD_SCRIPT).get("/").text
    assert body.index(HEAD_SCRIPT) < body.index("index-x.js")
