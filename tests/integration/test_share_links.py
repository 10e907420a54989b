"""Share links (--share-links): a read-only snapshot opens without login; a revoked one is gone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import launched_app
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache, local_backend):
    from llava_app.config import Config

    data = tmp_path_factory.mktemp("data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=6, share_links=True,
                    auth="owner:secret-pass,other:other-pass")
    with launched_app(config, local_backend("tiny-random")) as (url, app, _):
        yield SimpleNamespace(url=url, app=app, data=data)


def test_a_snapshot_opens_without_login_shows_the_branch_shown_and_a_revoked_one_is_gone(server, image_files):
    server = server.url
    client = Client(server, auth=("owner", "secret-pass"), verbose=False)
    client.predict("What is in Image 1? <script>alert(1)</script>", [handle_file(str(image_files[0]))], [],
                   api_name="/chat")
    client.predict("The old second question", [handle_file(str(image_files[1]))], [], api_name="/chat")
    client.predict(1, "The edited second question", [], [2], api_name="/edit")
    shared = client.predict(api_name="/share")
    assert shared["url"] == f"/share/{shared['token']}" and len(shared["token"]) == 43

    anonymous = httpx.Client(base_url=server.rstrip("/"))  # another "browser": no cookie, no login
    assert anonymous.get("/config").status_code == 401  # the app itself needs the login
    page = anonymous.get(shared["url"])
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    body = page.text
    assert "The edited second question" in body and "The old second question" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>" not in body
    assert "<textarea" not in body and "<input" not in body and "<form" not in body
    assert body.count("class='copy'") == 2 and "<html lang='en'>" in body  # a Copy button under each answer
    assert anonymous.get("/share-copy.js").headers["content-type"].startswith("text/javascript")
    chinese = anonymous.get(shared["url"], headers={"accept-language": "zh-CN,zh;q=0.9"}).text
    assert "<html lang='zh-CN'>" in chinese and "分享的对话" in chinese and ">复制<" in chinese
    assert "Image 1" in body and "Image 2" not in body  # the edit took Image 2 off the branch shown
    picture = anonymous.get(f"{shared['url']}/image/1")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert anonymous.get(f"{shared['url']}/image/2").status_code == 404
    assert anonymous.get("/share/" + "x" * 43).status_code == 404  # a guessed token

    # only the owner may revoke; then the page and its pictures are gone
    other = Client(server, auth=("owner", "secret-pass"), verbose=False)
    with pytest.raises(Exception, match="not one of yours"):
        other.predict(shared["token"], api_name="/revoke")
    assert client.predict(server.rstrip("/") + shared["url"], api_name="/revoke") is True
    assert anonymous.get(shared["url"]).status_code == 404
    assert anonymous.get(f"{shared['url']}/image/1").status_code == 404


def _signed_in(url: str, user: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=url.rstrip("/"))
    assert browser.post("/login", data={"username": user, "password": password}).status_code == 200
    return browser


def test_a_picture_is_served_only_under_its_conversations_secret_folder(server, image_files):
    """Another signed-in user who knows (or guesses from a copy of her own) a picture's content hash gets
    nothing: not the stored file, not the saved copy, not the instances' leases; the owner's page path works."""
    owner = Client(server.url, auth=("owner", "secret-pass"), verbose=False)
    owner.predict("What is in Image 1?", [handle_file(str(image_files[2]))], [], api_name="/chat")
    context = owner.predict(api_name="/context")
    sha = context["images"][0]["sha256"]
    assert server.app.config.auth and "view_key" not in str(context)  # the folder's key is the page's alone
    conv = server.app.service.sessions._convs[context["conversation_id"]]  # (the owner's page is not driven here)
    page_path = server.app.shown_path(conv, conv.images[0].path)
    assert server.app.shown.root in Path(page_path).parents and sha not in str(Path(page_path).parent)

    stored = server.data / "images" / sha[:2] / f"{sha}.png"
    saved = next(server.data.glob(f"history/images/*/{sha}.png"))  # the saved conversation's own copy
    leases = list((server.data / "images" / "instances").glob("*.json"))
    assert stored.exists() and saved.exists() and leases
    other = _signed_in(server.url, "other", "other-pass")
    owner_browser = _signed_in(server.url, "owner", "secret-pass")
    for path in (stored, saved, *leases):
        for browser in (other, owner_browser):  # nobody, the owner included, reaches the data folder's files
            for route in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file/{path}"):
                assert browser.get(route).status_code in (403, 404), route
    guessed = server.app.shown.root / ("x" * 24) / f"{sha}.png"
    assert other.get(f"/gradio_api/file={guessed}").status_code in (403, 404)
    mine = owner_browser.get(f"/gradio_api/file={page_path}")
    assert mine.status_code == 200 and mine.content == stored.read_bytes()
