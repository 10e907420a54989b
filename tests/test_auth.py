"""Optional login for team demos, and the Gradio pin against published security advisories."""

from __future__ import annotations

import re
from pathlib import Path

import gradio
import httpx
import pytest
from gradio_client import Client

from conftest import launched_app
from llava_app.web.auth import load_users, parse_users
from llava_app.config import Config, parse_config
from llava_app.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


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
        with pytest.raises(Exception):
            Client(url, verbose=False)
        with pytest.raises(Exception):
            Client(url, auth=("ann", "wrong"), verbose=False)
        client = Client(url, auth=("ann", "correct horse"), verbose=False)
        assert client.predict("hello", [], api_name="/chat").strip()


def _advisory_table() -> list[tuple[str, str]]:
    """(advisory, first fixed release) rows of the README's table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Gradio security advisories", 1)[1].split("\n## ", 1)[0]
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
