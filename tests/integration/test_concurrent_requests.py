"""The page and /v1 at once on one local engine: their prompt counting, context fitting and the
streamer's decoding share one tokenizer, every request must still be answered, and page and /v1
answers are decoded in one batch."""

from __future__ import annotations

import base64
import threading

import openai
from conftest import launched_app, make_image
from gradio_client import Client, handle_file


def test_page_and_v1_requests_at_once_all_succeed(tmp_path, tiny_cache, image_files):
    from llava_app.config import Config

    config = Config(model="tiny-random-llava-next", device="cpu", data_dir=str(tmp_path / "d"), max_new_tokens=10,
                    stream_delay=0.005, openai_api=True)
    answers: dict[str, str] = {}
    errors: list[BaseException] = []

    with launched_app(config) as (url, app, _):
        def v1(i: int, color: str) -> None:
            try:
                client = openai.OpenAI(base_url=f"{url}v1", api_key="unused", max_retries=0, timeout=120)
                image = "data:image/png;base64," + base64.b64encode(make_image(color)).decode()
                msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                                     {"type": "text", "text": f"What colour is this? ({i})"}]}]
                stream = client.chat.completions.create(model=config.model, messages=msgs, stream=True,
                                                        max_tokens=10, stream_options={"include_usage": True})
                chunks = list(stream)
                answers[f"v1-{i}"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens == 10
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def page(i: int) -> None:
            try:
                client = Client(url, verbose=False)
                answers[f"page-{i}"] = client.predict(f"Describe Image 1 ({i})", [handle_file(str(image_files[i]))],
                                                      api_name="/chat")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=v1, args=(i, c)) for i, c in enumerate(("red", "navy", "olive"))]
        threads += [threading.Thread(target=page, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        engine = getattr(app.service.backend, "engine", app.service.backend)
    assert not errors, errors
    assert engine.scheduler.peak_rows >= 2, "page and /v1 answers should have been decoded in one batch"
    assert sorted(answers) == ["page-0", "page-1", "v1-0", "v1-1", "v1-2"]
    assert all(a.strip() for a in answers.values()), answers
