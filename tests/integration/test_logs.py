"""Logs at the default level never carry image bytes, base64 or what users wrote."""

from __future__ import annotations

import base64
import logging

from conftest import launched_app, make_image
from gradio_client import Client, handle_file

from llava_app.config import Config

SECRET_QUESTION = "zebra-7731 what is my private holiday photo about"


def test_a_chat_logs_no_user_content(tmp_path, local_backend, caplog, capfd, monkeypatch):
    photo = tmp_path / "private.png"
    photo.write_bytes(make_image("purple", (72, 40)))
    bogus = tmp_path / "notes-zebra.png"
    bogus.write_text("zebra-7731 secret notes, not an image")
    config = Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=6)
    caplog.set_level(logging.INFO)  # app.py's default level
    with launched_app(config, local_backend()) as (url, app, demo):
        client = Client(url, verbose=False)
        answer = client.predict(SECRET_QUESTION, [handle_file(str(photo))], api_name="/chat")
        client.predict(SECRET_QUESTION + " again", [], api_name="/chat")
        try:
            client.predict(SECRET_QUESTION, [handle_file(str(bogus))], api_name="/chat")
        except Exception:  # noqa: BLE001 - refused on purpose; only the logs matter here
            pass
        # A failing engine logs the failure's kind, not the request.
        def failing(request):
            raise ValueError(f"engine broke on {SECRET_QUESTION}")
            yield

        monkeypatch.setattr(app.service.backend, "stream", failing)
        try:
            client.predict(SECRET_QUESTION, [], api_name="/chat")
        except Exception:  # noqa: BLE001
            pass
        stored = app.service.store.files()[0].read_bytes()
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() + " " + str(r.exc_text or "") for r in caplog.records) + out + err
    assert caplog.records, "nothing was captured: the test would prove nothing"
    assert any("generation failed" in r.getMessage() for r in caplog.records)
    forbidden = {
        "the question": "zebra-7731",
        "the answer": answer.strip(),
        "base64 of the upload": base64.b64encode(photo.read_bytes())[8:48].decode(),
        "base64 of the stored image": base64.b64encode(stored)[8:48].decode(),
        "raw PNG bytes": "IHDR",
    }
    for what, needle in forbidden.items():
        assert needle not in logged, f"{what} appears in the logs"
