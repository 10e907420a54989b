"""Model switching: the allow-list, a conversation that survives the switch, the old model freed."""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
import weakref

import pytest
from conftest import launched_app
from gradio_client import Client, handle_file

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.config import Config
from llava_app.engine.base import GenerationParams
from llava_app.engine.catalog import PRESETS, allowed_models, check_allowed
from llava_app.errors import UserError

OTHER = "tiny-random-llava-onevision"


@pytest.fixture
def config(tmp_path, tiny_cache):
    # in the app's process: these tests look into the engines (their weights freed); test_worker.py
    # switches engines that run in processes of their own
    return Config(model="tiny-random", device="cpu", data_dir=str(tmp_path / "data"), max_new_tokens=8,
                  allowed_models=OTHER, model_switching="everyone", engine_process=False)


def _switchable(config, store):
    from llava_app.engine import make_app_backend
    from llava_app.engine.switchable import SwitchableBackend

    backend = make_app_backend(config, store)
    assert isinstance(backend, SwitchableBackend)
    return backend


def _answer(service, conv, question, max_new_tokens=8) -> str:
    service.ask(conv, question)
    text = ""
    for text in service.stream_answer(conv, GenerationParams(max_new_tokens=max_new_tokens)):  # noqa: B007 - the last is the answer
        pass
    return text


def test_allow_list():
    config = Config(model="/models/mine", allowed_models="presets, tiny-random")
    allowed = allowed_models(config)
    assert allowed[0] == "/models/mine" and allowed[-1] == "tiny-random"
    assert [p.id for p in PRESETS] == allowed[1:-1]
    assert check_allowed(" tiny-random ", allowed) == "tiny-random"
    with pytest.raises(UserError, match="not one of the models"):
        check_allowed("someone/huge-model", allowed)
    assert check_allowed("someone/huge-model", allowed_models(Config(allowed_models="*"))) == "someone/huge-model"
    # Empty: only the start-up model, so the app holds no switchable backend and shows no picker.
    assert allowed_models(Config(model="tiny-random", allowed_models="")) == ["tiny-random"]


def test_switch_keeps_the_conversation_and_frees_the_old_model(config, store, image_files):
    backend = _switchable(config, store)
    try:
        service = ChatService(backend, store)
        conv = Conversation()
        service.add_images(conv, [(str(p), p.name) for p in image_files[:2]])
        first = _answer(service, conv, "Compare Image 1 and Image 2")
        before = conv.last_prompt
        from llava_app.web.openai.endpoint import OpenAIEndpoint

        api = OpenAIEndpoint(service, config)  # /v1 beside the page: it must not keep the old engine's parts
        old_engine, old_model = weakref.ref(backend.engine), weakref.ref(backend.engine.model)
        old_tokenizer = weakref.ref(backend.engine.processor.tokenizer)
        steps = []
        assert backend.switch(OTHER, report=lambda fraction, message: steps.append((fraction, message))) is True
        assert backend.model_name == OTHER and backend.is_random
        assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1][0] == 1.0
        gc.collect()
        assert old_model() is None, "the previous model is still in memory"
        assert old_tokenizer() is None and old_engine() is None, "the previous engine or tokenizer is still held"
        assert api.service.backend is backend

        second = _answer(service, conv, "Which one is brighter?")
        assert second.strip()
        assert [t.user for t in conv.turns] == ["Compare Image 1 and Image 2", "Which one is brighter?"]
        assert conv.turns[0].assistant == first
        after = conv.last_prompt
        # Both images went to the new model, encoded its way (OneVision tokens, not LLaVA's 16 per image).
        assert after.n_images == 2 and after.image_labels == ["Image 1", "Image 2"]
        assert after.n_tokens != before.n_tokens
        assert after.text.count("<image>") == 2 and "Compare Image 1 and Image 2" in after.text
        assert backend.switch(OTHER) is False  # already loaded: nothing to do
    finally:
        backend.close()


def test_a_model_that_cannot_load_leaves_the_previous_one(config, store, image_files, tmp_path):
    broken = tmp_path / "not-a-model"  # a folder without a checkpoint (fails at once, with or without a network)
    broken.mkdir()
    backend = _switchable(dataclasses.replace(config, allowed_models=str(broken)), store)
    try:
        with pytest.raises(UserError, match="Still using tiny-random"):
            backend.switch(str(broken))
        assert backend.model_name == "tiny-random"
        service = ChatService(backend, store)
        conv = Conversation()
        service.add_images(conv, [(str(image_files[0]), "a.png")])
        assert _answer(service, conv, "What is this?").strip()
    finally:
        backend.close()


def test_switch_waits_for_the_answer_being_written(config, store, image_files):
    backend = _switchable(config, store)
    try:
        service = ChatService(backend, store)
        conv = Conversation()
        service.add_images(conv, [(str(image_files[0]), "a.png")])
        service.ask(conv, "Tell me a story")
        stream = service.stream_answer(conv, GenerationParams(max_new_tokens=12))
        next(stream)  # the old model is writing
        switcher = threading.Thread(target=backend.switch, args=(OTHER,))
        switcher.start()
        time.sleep(0.5)
        assert switcher.is_alive() and backend.switching
        for _ in stream:
            pass
        switcher.join(60)
        assert not switcher.is_alive() and backend.model_name == OTHER
        assert conv.turns[0].assistant.strip() and not conv.turns[0].stopped
    finally:
        backend.close()


def test_switching_over_the_api_keeps_the_conversation(config, image_files):
    from llava_app.storage.images import ImageStore

    backend = _switchable(config, ImageStore(os.path.join(config.data_dir, "images")))  # the app's store
    with launched_app(config, backend=backend) as (url, _, _):
        client = Client(url, verbose=False)
        first = client.predict("Compare Image 1 and Image 2", [handle_file(str(p)) for p in image_files[:2]],
                               api_name="/chat")
        tokens_before = client.predict(api_name="/context")["prompt_tokens"]
        with pytest.raises(Exception, match="not in the list of choices|not one of the models"):
            client.predict("someone/any-model", api_name="/switch_model")  # the picker's choices only
        shown = client.predict(OTHER, api_name="/switch_model")
        assert OTHER in shown[0]
        second = client.predict("Which one is brighter?", [], api_name="/chat")
        ctx = client.predict(api_name="/context")
        assert second.strip() and ctx["turns"][0]["assistant"] == first
        assert [t["user"] for t in ctx["turns"]] == ["Compare Image 1 and Image 2", "Which one is brighter?"]
        assert ctx["prompt_images"] == 2 and ctx["prompt_tokens"] != tokens_before


def test_api_answers_overlap_after_a_load_press(config):
    """A press of Load (refused, then accepted) leaves /chat its own limit: four answers at once are decoded
    together. Switches had shared the answers' concurrency group, and Gradio keeps a group's lowest limit."""
    from llava_app.storage.images import ImageStore

    config = dataclasses.replace(config, max_new_tokens=12, stream_delay=0.05)  # about 0.6 s an answer
    backend = _switchable(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend=backend) as (url, _, _):
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="not in the list of choices|not one of the models"):
            client.predict("someone/any-model", api_name="/switch_model")
        client.predict(OTHER, api_name="/switch_model")
        clients = [Client(url, verbose=False) for _ in range(4)]
        jobs = [c.submit(f"Question {i}", [], [], api_name="/chat") for i, c in enumerate(clients)]
        answers = [job.result(timeout=120) for job in jobs]
    assert all(a.strip() for a in answers)
    assert backend.model_name == OTHER and backend.engine.scheduler.peak_rows >= 2, "answers waited in turn"


def test_v1_follows_the_model_held_now(config, image_files):
    """After a switch in the page, /v1 lists, accepts and names the new model, and refuses the old one."""
    import base64

    import httpx
    import openai_schemas

    from llava_app.storage.images import ImageStore

    config = dataclasses.replace(config, openai_api=True)
    backend = _switchable(config, ImageStore(os.path.join(config.data_dir, "images")))
    image = "data:image/png;base64," + base64.b64encode(image_files[0].read_bytes()).decode()

    def ask(model: str) -> httpx.Response:
        content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "What is it?"}]
        return httpx.post(f"{url}v1/chat/completions", timeout=120,
                          json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": content}]})

    with launched_app(config, backend=backend) as (url, _, _):
        assert [m["id"] for m in httpx.get(f"{url}v1/models").json()["data"]] == ["tiny-random"]
        before = ask("tiny-random").json()
        assert before["model"] == "tiny-random"
        Client(url, verbose=False).predict(OTHER, api_name="/switch_model")
        assert backend.model_name == OTHER
        listed = httpx.get(f"{url}v1/models").json()
        openai_schemas.check("ListModelsResponse", listed)
        assert [m["id"] for m in listed["data"]] == [OTHER]
        assert listed["data"][0]["max_model_len"] == backend.context_length
        old = ask("tiny-random")
        assert old.status_code == 404 and f"this server serves `{OTHER}`" in old.json()["error"]["message"]
        openai_schemas.check("ErrorResponse", old.json())
        new = ask(OTHER)
        assert new.status_code == 200, new.text
        answer = new.json()
        openai_schemas.check("CreateChatCompletionResponse", answer)
        assert answer["model"] == OTHER and answer["choices"][0]["message"]["content"].strip()
        # Counted by the new model: OneVision encodes the image into other tokens than LLaVA's 16.
        assert answer["usage"]["prompt_tokens"] != before["usage"]["prompt_tokens"]
        text = answer["choices"][0]["message"]["content"]
        tokenizer = backend.engine.processor.tokenizer
        assert answer["usage"]["completion_tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ----- who may switch: the operator's policy, enforced on the server ----------------------------
def test_switch_policy():
    from llava_app.web.handlers.switch_policy import SwitchPolicy

    default = SwitchPolicy.from_config(Config())
    assert default.mode == "admins" and not default.offered and not default.allows(None)  # safe on a shared Space
    everyone = SwitchPolicy.from_config(Config(model_switching="everyone"))
    assert everyone.offered and everyone.for_everyone and everyone.allows(None) and everyone.allows("bob")
    admins = SwitchPolicy.from_config(Config(model_switching="admins", auth="ann:pw1,bob:pw2", admins=" ann , "))
    assert admins.offered and not admins.for_everyone
    assert admins.allows("ann") and not admins.allows("bob") and not admins.allows(None)
    assert not SwitchPolicy.from_config(Config(model_switching="admins", auth="ann:pw1")).offered  # no admins named
    off = SwitchPolicy.from_config(Config(model_switching="off", auth="ann:pw1", admins="ann"))
    assert not off.offered and not off.allows("ann")


def test_switching_flags_are_checked():
    from llava_app.config import parse_config

    assert parse_config(["--model-switching", "everyone"], env={}).model_switching == "everyone"
    assert parse_config([], env={"LLAVA_APP_MODEL_SWITCHING": "off"}).model_switching == "off"
    with pytest.raises(SystemExit):
        parse_config([], env={"LLAVA_APP_MODEL_SWITCHING": "anyone"})
    with pytest.raises(SystemExit):
        parse_config(["--admins", "ann"], env={})  # admins are users of a login


def test_by_default_nobody_gets_the_picker_or_the_endpoint(config, tmp_path):
    from llava_app.storage.images import ImageStore

    config = dataclasses.replace(config, model_switching="admins")  # the default, without a login
    backend = _switchable(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend=backend) as (url, _, demo):
        assert not any(getattr(b, "elem_id", None) == "model-picker" for b in demo.blocks.values())
        with pytest.raises(ValueError, match="Cannot find a function with `api_name`: /switch_model"):
            Client(url, verbose=False).predict(OTHER, api_name="/switch_model")
        assert backend.model_name == "tiny-random"


def test_only_admins_may_switch_over_the_api(config):
    from llava_app.storage.images import ImageStore

    config = dataclasses.replace(config, model_switching="admins", auth="ann:pw-ann-1,bob:pw-bob-1", admins="ann")
    backend = _switchable(config, ImageStore(os.path.join(config.data_dir, "images")))
    with launched_app(config, backend=backend) as (url, _, _):
        bob = Client(url, auth=("bob", "pw-bob-1"), verbose=False)
        with pytest.raises(Exception, match="Only the server's admins may switch the model"):
            bob.predict(OTHER, api_name="/switch_model")
        assert backend.model_name == "tiny-random"
        shown = Client(url, auth=("ann", "pw-ann-1"), verbose=False).predict(OTHER, api_name="/switch_model")
        assert OTHER in shown[0] and backend.model_name == OTHER


def test_a_failed_switch_leaves_the_picker_on_the_model_still_loaded(config, tmp_path):
    """The page's picker goes back to the loaded model and says why (not the failed one with "Loaded")."""
    from types import SimpleNamespace

    from llava_app.application import create_app
    from llava_app.storage.images import ImageStore
    from llava_app.web.handlers.session import SessionHandlers

    broken = tmp_path / "not-a-model"
    broken.mkdir()
    config = dataclasses.replace(config, allowed_models=str(broken))
    store = ImageStore(os.path.join(config.data_dir, "images"))
    app = create_app(config, backend=_switchable(config, store), store=store)
    try:
        prefs = SessionHandlers(app)
        request = SimpleNamespace(username=None, headers={"accept-language": "en-US"})
        with pytest.raises(Exception, match="Still using tiny-random"):
            prefs.on_switch(str(broken), request, progress=lambda *a, **k: None)
        line, _, status, dropdown = prefs.after_failed_switch(request)
        assert "tiny-random" in line and dropdown["value"] == "tiny-random"
        assert "Could not load" in status and "Still using tiny-random" in status and "Loaded" not in status
        refused = SessionHandlers(app, policy=dataclasses.replace(prefs.policy, mode="off"))
        with pytest.raises(Exception, match="Only the server's admins"):
            refused.on_switch("tiny-random", request, progress=lambda *a, **k: None)
        assert "Only the server's admins" in refused.after_failed_switch(request)[2]
    finally:
        app.close()
