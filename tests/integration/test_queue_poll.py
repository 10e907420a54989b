"""Gradio's queue polls for new events every 10 ms, not every millisecond (gradio_compat.poll_queue_less):
set on the launched server, which still answers; a Gradio without the field gets a warning, not a failure."""

from __future__ import annotations

import logging
import types

from conftest import launched_app
from gradio_client import Client

from llava_app.web.gradio_compat import QUEUE_POLL_S, poll_queue_less


def test_the_launched_server_polls_every_10_ms_and_answers(app_config):
    with launched_app(app_config) as (url, _, demo):
        assert demo._queue.sleep_when_free == QUEUE_POLL_S == 0.01
        started = demo._queue.sleep_when_free
        result = Client(url, verbose=False).predict("Say something", [], api_name="/chat")
        assert isinstance(result, str) and result.strip()
        assert demo._queue.sleep_when_free == started


def test_a_slower_gradio_rate_is_kept_and_a_missing_field_is_only_a_warning(caplog):
    demo = types.SimpleNamespace(_queue=types.SimpleNamespace(sleep_when_free=0.05))  # Gradio's on Windows
    poll_queue_less(demo)
    assert demo._queue.sleep_when_free == 0.05
    with caplog.at_level(logging.WARNING, logger="llava_app.web.gradio_compat"):
        poll_queue_less(types.SimpleNamespace())
    assert "sleep_when_free" in caplog.text
