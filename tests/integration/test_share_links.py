"""Share links (--share-links): a read-only snapshot opens without login; a revoked one is gone."""

from __future__ import annotations

import httpx
import pytest
from conftest import launched_app
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_cache, local_backend):
    from llava_app.config import Config

    data = tmp_path_factory.mktemp("data")
    config = Config(model="tiny-random", device="cpu", data_dir=str(data), max_new_tokens=6, share_links=True,
                    auth="owner:secret-pass")
    with launched_app(config, local_backend("tiny-random")) as (url, _, _):
        yield url


def test_a_snapshot_opens_without_login_shows_the_branch_shown_and_a_revoked_one_is_gone(server, image_files):
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
