"""An unexpected engine failure is logged with its traceback, and with nothing the user wrote."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fakes import RecordingBackend

from llava_app.application import create_app
from llava_app.chat.conversation import Conversation
from llava_app.config import Config
from llava_app.faults import traceback_only
from llava_app.web.handlers import Handlers

QUESTION = "zebra-7731 what is on my private holiday photo"


@pytest.fixture
def failing(tmp_path):
    backend = RecordingBackend()
    # An engine error may quote the prompt: the message must stay out of the log, the traceback must not.
    backend.fail_with = RuntimeError(f"shape mismatch in layer 3 while reading {QUESTION!r}")
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), max_new_tokens=8, openai_api=True,
                    openai_api_key="sk-test")
    app = create_app(config, backend=backend)
    yield app, config
    app.close()


def logged_failures(caplog) -> list[str]:
    """The records of failures that carry a traceback, formatted as a log handler writes them."""
    records = [r for r in caplog.records if r.exc_info]
    assert records, "no failure was logged with its traceback"
    return [logging.Formatter("%(levelname)s %(name)s: %(message)s").format(r) for r in records]


def test_a_failed_answer_on_the_page_logs_the_traceback_without_the_question(failing, caplog):
    app, _ = failing
    handlers, conv = Handlers(app).chat, Conversation()
    handlers.on_submit(QUESTION, conv)

    async def run():
        return [update async for update in handlers.on_generate(conv, "", 0.0, 0.9, 8)]

    with caplog.at_level(logging.ERROR), pytest.warns(UserWarning, match=r"failed on this request \(RuntimeError\)"):
        asyncio.run(run())
    [text] = logged_failures(caplog)
    assert text.startswith("ERROR llava_app.web.handlers.context: generation failed: RuntimeError\nTraceback")
    assert "in stream" in text and "raise self.fail_with" in text  # where it was raised, in the fake engine
    assert "RuntimeError: (message withheld from the log)" in text
    assert "zebra" not in text and "shape mismatch" not in text


def test_a_failed_v1_answer_logs_the_traceback_without_the_question(failing, caplog):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from llava_app.web.openai.endpoint import build_router

    app, config = failing
    web = FastAPI()
    web.include_router(build_router(app.service, config))
    with caplog.at_level(logging.ERROR), TestClient(web) as client:
        reply = client.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                            json={"model": "recording-fake", "messages": [{"role": "user", "content": QUESTION}]})
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "engine_error"
    [text] = logged_failures(caplog)
    assert text.startswith("ERROR llava_app.web.openai.endpoint: generation failed: RuntimeError\nTraceback")
    assert "raise self.fail_with" in text and "zebra" not in text and "shape mismatch" not in text


def test_the_logged_stand_in_keeps_types_traceback_and_causes_but_no_message():
    try:
        try:
            raise KeyError(QUESTION)
        except KeyError as inner:
            raise ValueError(QUESTION) from inner
    except ValueError as exc:
        error = exc
    stand_in = traceback_only(error)
    assert type(stand_in).__name__ == "ValueError" and type(stand_in.__cause__).__name__ == "KeyError"
    assert stand_in.__traceback__ is error.__traceback__
    assert stand_in.__cause__.__traceback__ is error.__cause__.__traceback__
    assert str(stand_in) == str(stand_in.__cause__) == "(message withheld from the log)"
