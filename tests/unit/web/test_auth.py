"""Optional login for team demos, and the Gradio pin against published security advisories."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import gradio
import httpx
import openai
import openai_schemas
import pytest
from conftest import launched_app
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError

from llava_app.config import Config, parse_config
from llava_app.errors import UserError
from llava_app.web.auth import load_users, parse_users

ROOT = Path(__file__).resolve().parents[3]


def test_users_from_flag_file_and_environment(tmp_path):
    assert parse_users("ann:pw1, bob:p:w:2") == [("ann", "pw1"), ("bob", "p:w:2")]
    users = tmp_path / "users.txt"
    users.write_text("# team demo\ncy:secret, with comma\n\n  dee : pw4\n")
    assert load_users("ann:pw1", str(users)) == [("ann", "pw1"), ("cy", "secret, with comma"), ("dee", "pw4")]
    config = parse_config([], env={"LLAVA_APP_AUTH": "eve:pw5", "LLAVA_APP_AUTH_FILE": str(users)})
    assert [u for u, _ in load_users(config.auth, config.auth_file)] == ["eve", "cy", "dee"]
    assert load_users("", "") is None  # login off by default


def test_bad_user_lists_are_refused_without_echoing_passwords(tmp_path):
    with pytest.raises(UserError, match="expected user:password") as err:
        parse_users("ann-has-no-password-hunter2")
    assert "hunter2" not in str(err.value)
    with pytest.raises(UserError, match="cannot read --auth-file"):
        load_users("", str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="twice"):
        load_users("ann:a,ann:b")


def test_login_is_required_when_users_are_set(tmp_path, local_backend):
    users = tmp_path / "users.txt"
    users.write_text("ann:correct horse\n")
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=4,
                    auth_file=str(users))
    with launched_app(config, local_backend()) as (url, _, _):
        assert httpx.get(url + "config").status_code == 401
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        client = Client(url, auth=("ann", "correct horse"), verbose=False)
        assert client.predict("hello", [], api_name="/chat").strip()


USERS = "ann:correct horse\nbob:p:w\n"
CHAT = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Every route the app adds to Gradio's server, with a request that succeeds once let in.
# A new route makes the tests below fail until it is listed here (and so tested).
ADDED_ROUTES = {("GET", "/v1/models"): None, ("POST", "/v1/chat/completions"): CHAT}


def _added_routes(demo) -> set[tuple[str, str]]:
    """(method, path) of each route on the running server whose handler is this app's code, not Gradio's."""
    found = set()
    for route in demo.server_app.routes:
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and endpoint.__module__.startswith("llava_app"):
            found |= {(method, route.path) for method in route.methods - {"HEAD"}}
    return found


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _call(url: str, route: tuple[str, str], headers: dict[str, str], **kw) -> httpx.Response:
    method, path = route
    return httpx.request(method, url + path.lstrip("/"), json=ADDED_ROUTES[route], headers=headers, timeout=60, **kw)


def _v1_config(tmp_path, **kwargs) -> Config:
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    return Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=4,
                  auth_file=str(users), openai_api=True, **kwargs)


@pytest.mark.parametrize("key", ["", "sk-team-key"])
def test_a_login_protects_every_route_the_app_adds(tmp_path, local_backend, key):
    with launched_app(_v1_config(tmp_path, openai_api_key=key), local_backend()) as (url, _, demo):
        routes = _added_routes(demo)
        assert routes == set(ADDED_ROUTES)
        refused = [{}, _basic("ann", "wrong"), _basic("eve", "correct horse"), _basic("ann", ""),
                   {"Authorization": "Basic not-base64!"}, {"Authorization": "Bearer correct horse"},
                   {"Authorization": "Bearer wrong"}]
        allowed = [_basic("ann", "correct horse"), _basic("bob", "p:w")] + (
            [{"Authorization": f"Bearer {key}"}] if key else [])
        for route in sorted(routes):
            for headers in refused:
                r = _call(url, route, headers)
                assert r.status_code == 401, (route, headers, r.text)
                openai_schemas.check("ErrorResponse", r.json())
                assert "HTTP Basic" in r.json()["error"]["message"]
                assert r.headers["www-authenticate"].startswith("Basic realm=")
            for headers in allowed:
                r = _call(url, route, headers)
                assert r.status_code == 200, (route, headers, r.text)
        # An API client with the official openai client: the login user in its default headers.
        client = openai.OpenAI(base_url=url + "v1", api_key="unused", default_headers=_basic("bob", "p:w"),
                               max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-random"]
        # Gradio's login cookie opens the page, not /v1 (it is SameSite=None: other sites could use it).
        with httpx.Client(base_url=url) as browser:
            assert browser.post("login", data={"username": "ann", "password": "correct horse"}).status_code == 200
            assert browser.get("config").status_code == 200
            assert browser.get("v1/models").status_code == 401
        assert httpx.get(url + "config").status_code == 401


def test_v1_open_next_to_a_login_is_an_explicit_flag(tmp_path, local_backend):
    with pytest.raises(SystemExit, match="--openai-api-open needs --openai-api"):
        parse_config(["--openai-api-open"], env={})
    with pytest.raises(SystemExit, match="drop it or --openai-api-key"):
        parse_config(["--openai-api", "--openai-api-open", "--openai-api-key", "k"], env={})
    assert parse_config(["--openai-api"], env={"LLAVA_APP_OPENAI_API_OPEN": "yes"}).openai_api_open
    assert not parse_config(["--openai-api"], env={}).openai_api_open  # closed unless asked for
    with launched_app(_v1_config(tmp_path, openai_api_open=True), local_backend()) as (url, _, demo):
        for route in sorted(_added_routes(demo)):
            r = _call(url, route, {})
            assert r.status_code == 200, (route, r.text)
        assert httpx.get(url + "config").status_code == 401  # the page keeps its login


def _advisory_table() -> list[tuple[str, str]]:
    """(advisory, first fixed release) rows of the web layer's README table."""
    text = (ROOT / "llava_app" / "web" / "README.md").read_text()
    section = text.split("## Gradio security advisories", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*\[?((?:GHSA|CVE)-[\w-]+)\]?[^|]*\|[^|]*\|\s*([\d.]+)\s*\|", section, flags=re.M)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def test_gradio_pin_is_at_or_above_every_advisory_fix():
    rows = _advisory_table()
    assert len(rows) >= 20, "the README's advisory table is missing or unreadable"
    pin = re.search(r"^gradio==([\d.]+)", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert _version(gradio.__version__) == _version(pin)
    below = [(ghsa, fixed) for ghsa, fixed in rows if _version(pin) < _version(fixed)]
    assert not below, f"gradio=={pin} is older than these fixes: {below}"


def test_installed_gradio_has_the_redirect_fixes():
    """Two fixes without a release number in the advisories, checked in the installed code."""
    from gradio import oauth, route_utils
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    # GHSA-vwgg-rgg9-xx9q: four leading slashes used to survive as a scheme-relative URL.
    request = Request({"type": "http", "method": "GET", "path": "/logout", "headers": [],
                       "query_string": b"_target_url=////evil.invalid/x"})
    location = oauth._redirect_to_target(request).headers["location"]
    assert not location.startswith("//") and "evil.invalid" not in location.split("/")[2:3]
    # CVE-2026-59806: /gradio_api/file=<url> used to answer with a redirect to any URL.
    with pytest.raises(HTTPException) as err:
        route_utils.file_fetch("https://evil.invalid/x", None, None, None)
    assert err.value.status_code == 403
