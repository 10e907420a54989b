"""Fitting long conversations into a small context window, on the tiny models (real generation)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import make_image
from PIL import Image

WINDOW = 256  # tokens; a tiny-random image costs 16, a turn about 26
ANSWER = 8  # max new tokens: keeps 30 turns fast


class Recorder:
    """Records, without changing them, the engine's generations and the token ids it builds for each."""

    def __init__(self, backend):
        self.backend = backend
        self.requests, self.outputs, self.encoded = [], [], []

    def __enter__(self):
        stream = self.backend.stream

        def recording_stream(request):
            from llava_app.engine.base import TextDelta

            self.requests.append(request)
            text = ""
            try:
                for event in stream(request):
                    text += event.text if isinstance(event, TextDelta) else ""
                    yield event
            finally:
                self.outputs.append(text)
                # The ids the engine gave the model (one generation at a time: its latest run).
                self.encoded.append((self.backend.last_run.prompt_ids.tolist(), request))

        self.backend.stream = recording_stream
        return self

    def __exit__(self, *exc):
        del self.backend.stream  # back to the class's method

    def ids_of(self, request) -> list[int]:
        """The token ids the engine built for ``request``."""
        return next(ids for ids, made_for in self.encoded if made_for is request)


@pytest.fixture(scope="module")
def small_window_backend(tiny_model_path, backend_images):
    """A tiny LLaVA whose own config has a 256-token window (``max_position_embeddings``)."""
    from llava_app.engine.local.backend import LocalBackend
    from llava_app.storage.images import ImageStore

    path = tiny_model_path("tiny-random", context_length=WINDOW)
    backend = LocalBackend(str(path), ImageStore(backend_images), device="cpu")
    assert backend.context_length == WINDOW  # read from the model, no override
    return backend


def _service(backend, **fitter_kwargs):
    from llava_app.chat.context import ContextFitter
    from llava_app.chat.service import ChatService

    return ChatService(backend, backend.images, context=ContextFitter(backend, **fitter_kwargs))


def _chat(service, conv, n_turns, images_at, params, system_prompt="You are helpful."):
    """Ask ``n_turns`` questions, adding ``images_at[turn]`` first; returns per-turn records."""
    turns = []
    for k in range(n_turns):
        if k in images_at:
            result = service.add_images(conv, [(str(images_at[k]), Path(images_at[k]).name)])
            assert result.added and not result.errors
        service.ask(conv, f"what is the color of the thing on the left in picture {k}")
        for _ in service.stream_answer(conv, params, system_prompt):
            pass
        turns.append({"answer": conv.turns[-1].assistant, "first_visible": conv.first_visible,
                      "info": conv.last_prompt})
    return turns


@pytest.fixture(scope="module")
def long_chat(small_window_backend, tmp_path_factory):
    """A 30-turn chat with three images (added at turns 1, 4 and 8) in a 256-token window, recorded."""
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import GenerationParams

    folder = tmp_path_factory.mktemp("long-chat")
    images = {}
    for turn, (color, size) in zip([0, 3, 7], [("red", (64, 48)), ("blue", (40, 90)), ("green", (80, 80))],
                                   strict=True):
        images[turn] = folder / f"{color}.png"
        images[turn].write_bytes(make_image(color, size))
    service = _service(small_window_backend)
    conv = Conversation()
    with Recorder(small_window_backend) as rec:
        turns = _chat(service, conv, 30, images, GenerationParams(max_new_tokens=ANSWER))
    return service, conv, turns, rec


def test_thirty_turns_with_three_images_keep_answering_with_all_images(long_chat):
    from llava_app.web.handlers.views import chat_value, turn_of_message

    service, conv, turns, rec = long_chat
    assert len(rec.requests) == 30  # one generation per turn, no refusal
    assert all(t["answer"].strip() for t in turns)
    budget = WINDOW - ANSWER
    assert all(t["info"].n_tokens <= budget for t in turns)
    # The conversation outgrew the window several times over, yet all three images stayed in every prompt.
    assert service.context.count(conv, "You are helpful.", 0, "") > 3 * WINDOW
    for t in turns[7:]:
        assert t["info"].image_labels == ["Image 1", "Image 2", "Image 3"]
        assert t["info"].n_image_tokens == 3 * 16
    hidden = conv.first_visible
    assert hidden >= 20
    # Images of dropped turns open the first kept turn, with their labels, in order.
    prompt = turns[-1]["info"].text
    assert "Image 1:<image>\nImage 2:<image>\nImage 3:<image>\n" + conv.turns[hidden].user in prompt
    assert conv.turns[hidden - 1].user not in prompt and conv.turns[hidden].user in prompt
    # Dropped turns are marked: in /context and with a note in the chatbot right after them.
    summary = conv.summary()
    assert [t["in_prompt"] for t in summary["turns"]] == [False] * hidden + [True] * (30 - hidden)
    assert summary["context"]["hidden_turns"] == hidden and summary["context"]["window"] == WINDOW
    assert summary["context"]["image_tokens"] == 48 and summary["prompt_tokens"] <= budget
    shown = chat_value(conv, str)
    notes = [i for i, m in enumerate(shown) if m.get("metadata", {}).get("title", "").startswith("The model no longer")]
    assert len(notes) == 1
    assert f"{hidden} turns above" in shown[notes[0]]["metadata"]["title"]
    assert shown[notes[0] + 1]["content"] == conv.turns[hidden].user
    answers = [i for i, m in enumerate(shown) if m["role"] == "assistant" and not m.get("metadata")
               and "answer-footer" not in m["content"]]
    assert [turn_of_message(conv, i) for i in answers] == list(range(30))  # likes still find their turn
    footers = [i for i, m in enumerate(shown) if m["role"] == "assistant" and "answer-footer" in m["content"]]
    assert [turn_of_message(conv, i) for i in footers] == [turn_of_message(conv, i - 1) for i in footers]


def test_drops_come_in_steps_so_the_token_prefix_holds_for_several_turns(long_chat):
    _, _, turns, rec = long_chat
    ids = [rec.ids_of(r) for r in rec.requests]
    drops = [k for k in range(1, len(turns)) if turns[k]["first_visible"] != turns[k - 1]["first_visible"]]
    assert len(drops) >= 4
    assert all(b - a >= 4 for a, b in zip(drops, drops[1:], strict=False))  # several turns between drops
    for d in drops[:-1]:
        # After a drop the next turns only append: each prompt's ids start with the previous prompt's ids.
        for k in range(d, d + 3):
            assert ids[k + 1][: len(ids[k])] == ids[k], f"prefix changed between turns {k} and {k + 1}"
    # A drop itself rewrites the start (that is what dropping means), and frees room for the next turns.
    for d in drops:
        assert ids[d][: len(ids[d - 1])] != ids[d - 1]
        assert turns[d]["info"].n_tokens < turns[d - 1]["info"].n_tokens - 2 * 26


def test_summarize_dropped_replaces_dropped_turns_by_a_summary_the_model_writes(small_window_backend, image_files):
    from llava_app.chat.context import SUMMARY_INSTRUCTION
    from llava_app.chat.conversation import SUMMARY_LEAD, Conversation
    from llava_app.engine.base import GenerationParams

    service = _service(small_window_backend, summarize=True, summary_tokens=6)
    conv = Conversation()
    with Recorder(small_window_backend) as recorder:
        turns = _chat(service, conv, 12, {0: image_files[0], 2: image_files[1]},
                      GenerationParams(max_new_tokens=ANSWER))
    first_drop = next(k for k, t in enumerate(turns) if t["first_visible"])
    summary_calls = [i for i, r in enumerate(recorder.requests)
                     if SUMMARY_INSTRUCTION in r.messages[-1]["content"][-1]["text"]]
    assert summary_calls, "no summary was generated"
    # The summary call came just before the answer of the turn that dropped, and was given the dropped turns.
    first = summary_calls[0]
    assert first == first_drop  # one answer per earlier turn, then the summary
    asked = recorder.requests[first].messages[-1]["content"][-1]["text"]
    assert conv.turns[0].user in asked and "[Image 1]" in asked
    # What the model wrote is what stands in for the dropped turns, at the start of the first kept turn.
    written = recorder.outputs[summary_calls[-1]].strip()
    assert written and conv.context_summary == written
    prompt = turns[-1]["info"].text
    assert f"{SUMMARY_LEAD} {written}" in prompt
    first_kept = conv.turns[conv.first_visible].user
    assert prompt.index(SUMMARY_LEAD) < prompt.index("Image 1:<image>") < prompt.index(first_kept)
    assert turns[-1]["info"].image_labels == ["Image 1", "Image 2"]
    assert conv.summary()["context"]["summary"] == written
    if len(summary_calls) > 1:  # a later summary folds in the earlier one
        assert SUMMARY_LEAD in recorder.requests[summary_calls[-1]].messages[-1]["content"][-1]["text"]


def test_images_that_cannot_fit_are_refused_before_generating(local_backend, tmp_path):
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import GenerationParams
    from llava_app.errors import UserError

    backend = local_backend("tiny-random-llava-next", context_length=WINDOW)  # --context-length overrides
    service = _service(backend, answer_tokens=ANSWER)
    conv = Conversation()
    files = []
    for i, color in enumerate(["red", "blue", "green", "yellow"]):
        p = tmp_path / f"{color}.png"
        p.write_bytes(make_image(color, (64, 48 + i)))
        files.append((str(p), p.name))
    result = service.add_images(conv, files)
    assert len(result.added) == 4 and not result.errors
    assert result.warnings and "take" in str(result.warnings[0])  # told at upload already, image kept
    service.ask(conv, "compare the four pictures")
    with Recorder(backend) as recorder, pytest.raises(UserError) as err:
        list(service.stream_answer(conv, GenerationParams(max_new_tokens=ANSWER)))
    message = str(err.value)
    image_tokens = sum(service.context.image_tokens(im) for im in conv.images)
    assert image_tokens > WINDOW
    assert f"The 4 images in this conversation take {image_tokens:,} tokens" in message
    assert f"context window is {WINDOW:,} tokens" in message
    assert "Remove some images" in message and "longer context window" in message
    assert recorder.requests == []  # refused before generating
    assert conv.turns == [] and len(conv.images) == 4  # the question is taken back; nothing else is lost
    # Doing what the message says works.
    service.remove_images(conv, [1, 2])
    service.ask(conv, "compare the two pictures")
    answer = "".join(service.stream_answer(conv, GenerationParams(max_new_tokens=ANSWER)))
    assert answer.strip() and conv.last_prompt.image_labels == ["Image 3", "Image 4"]


def test_a_question_too_long_for_the_window_is_refused_with_its_own_message(local_backend):
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import GenerationParams
    from llava_app.errors import UserError

    backend = local_backend("tiny-random", context_length=64)
    service = _service(backend)
    conv = Conversation()
    service.ask(conv, " ".join(["red"] * 100))
    with pytest.raises(UserError, match="Shorten the question"):
        list(service.stream_answer(conv, GenerationParams(max_new_tokens=4)))
    service.ask(conv, "hi")
    with pytest.raises(UserError, match=r"Max new tokens \(64\) leaves no room"):
        list(service.stream_answer(conv, GenerationParams(max_new_tokens=64)))
    assert conv.turns == []


def test_undo_and_regenerate_after_a_drop(small_window_backend, image_files):
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import GenerationParams

    service = _service(small_window_backend)
    conv = Conversation()
    params = GenerationParams(max_new_tokens=ANSWER)
    _chat(service, conv, 10, {0: image_files[0]}, params)
    hidden = conv.first_visible
    assert hidden > 0
    service.regenerate(conv)
    assert "".join(service.stream_answer(conv, params)).strip()
    assert conv.first_visible == hidden  # the answer being redone had its room already
    while len(conv.turns) > hidden - 1:
        service.undo(conv)
    assert conv.first_visible == len(conv.turns)  # never past the end
    _chat(service, conv, 1, {}, params)
    assert conv.last_prompt.image_labels == ["Image 1"]


def test_image_limit_per_conversation_has_a_clear_message(local_backend, tmp_path):
    from llava_app.chat.conversation import Conversation
    from llava_app.chat.service import ChatService
    from llava_app.config import Config

    assert Config().max_images == 6
    service = ChatService(local_backend("tiny-random"), local_backend("tiny-random").images, max_images=2)
    conv = Conversation()
    files = []
    for color in ["red", "blue", "green"]:
        p = tmp_path / f"{color}.png"
        p.write_bytes(make_image(color))
        files.append((str(p), p.name))
    result = service.add_images(conv, files)
    assert result.added == ["Image 1", "Image 2"]
    assert [str(e) for e in result.errors] == ["green.png: This conversation already has 2 images, the limit is 2. "
                                               "Remove one (x on its thumbnail) or start a new chat."]


@pytest.mark.parametrize("size", [(2000, 1500), (3000, 1000), (1000, 3000), (1200, 1100), (700, 500)])
def test_downscaling_to_the_processor_resolution_keeps_what_the_model_gets(size, tiny_model_path):
    """Real LLaVA-1.5 and LLaVA-NeXT processor geometry: the same image tokens and grid from fewer pixels."""
    from transformers import AutoTokenizer, LlavaNextProcessor, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from llava_app.storage.images import ModelImageSize

    tok = AutoTokenizer.from_pretrained(tiny_model_path("tiny-random"))
    kw = dict(tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processors = [
        LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336},
                                                             crop_size={"height": 336, "width": 336}), **kw),
        LlavaNextProcessor(image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 336}), **kw),
    ]
    img = Image.effect_noise(size, 60).convert("RGB")
    for proc in processors:
        fitted = ModelImageSize.from_processor(proc.image_processor, floor=0).fit(*size)
        assert fitted[0] * fitted[1] < size[0] * size[1] / 2 or size == (700, 500)
        small = img.resize(fitted)
        a = proc(text="<image>", images=[img], return_tensors="pt")
        b = proc(text="<image>", images=[small], return_tensors="pt")
        assert int((a["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum()) == \
            int((b["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum())
        assert a["pixel_values"].shape == b["pixel_values"].shape


def test_uploads_are_stored_no_larger_than_the_model_uses(local_backend, tmp_path):
    from llava_app.chat.conversation import Conversation
    from llava_app.chat.service import ChatService
    from llava_app.storage.images import ModelImageSize

    backend = local_backend("tiny-random")
    assert backend.image_resolution() == ModelImageSize(base=(32, 32))  # 32 px model, 336 px floor for the eye
    service = ChatService(backend, backend.images)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(make_image("red", (2000, 1500)))
    small.write_bytes(make_image("blue", (64, 48)))
    conv = Conversation()
    service.add_images(conv, [(str(big), "big.png"), (str(small), "small.png")])
    assert [(im.width, im.height) for im in conv.images] == [(448, 336), (64, 48)]
    with Image.open(conv.images[0].path) as f:
        assert f.size == (448, 336)


def test_fitting_is_off_when_the_engine_cannot_count():
    from llava_app.chat.context import ContextFitter
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import Backend, GenerationParams, TextDelta
    from llava_app.web.handlers.views import meter_text

    class Remote(Backend):
        context_length = 100

        def stream(self, request):
            yield TextDelta("ok")

    fitter = ContextFitter(Remote())
    conv = Conversation()
    for _ in range(50):
        conv.ask("a long question " * 20)
        assert fitter.fit(conv, "", GenerationParams(max_new_tokens=8)) is None
        conv.answer("fine")
    assert conv.first_visible == 0
    assert meter_text(conv, fitter.window) == "Context window: 100 tokens · 0 images"


def test_context_endpoint_and_meter_report_window_images_and_hidden_turns(tmp_path, tiny_cache, image_files):
    from conftest import launched_app
    from gradio_client import Client, handle_file

    from llava_app.config import parse_config

    config = parse_config(["--model", "tiny-random", "--device", "cpu", "--data-dir", str(tmp_path / "d"),
                           "--max-new-tokens", str(ANSWER), "--context-length", "160", "--summarize-dropped"], env={})
    with launched_app(config) as (url, _, _):
        client = Client(url, verbose=False)
        client.predict("what is in these", [handle_file(str(p)) for p in image_files[:2]], api_name="/chat")
        for k in range(8):
            assert client.predict(f"and what color is the thing number {k}", [], api_name="/chat").strip()
        ctx = client.predict(api_name="/context")
    c = ctx["context"]
    assert c["window"] == 160 and c["image_tokens"] == 32 and 0 < c["prompt_tokens"] <= 160 - ANSWER
    assert c["hidden_turns"] > 0
    assert [t["in_prompt"] for t in ctx["turns"]] == [False] * c["hidden_turns"] + [True] * (9 - c["hidden_turns"])
    assert ctx["prompt_image_labels"] == ["Image 1", "Image 2"]
    assert c["summary"] and c["summary"] in ctx["prompt"]  # --summarize-dropped reaches the page's service


def test_meter_text():
    from llava_app.chat.conversation import Conversation, PromptInfo
    from llava_app.web.handlers.views import meter_text

    conv = dataclasses.replace(Conversation(), first_visible=3, context_window=1024, context_summary="they talked")
    conv.last_prompt = PromptInfo(text="x", n_tokens=512)
    text = meter_text(conv, None)
    assert text == "Context: **512** / 1,024 tokens (50%) · 0 images · 3 earlier turns no longer seen by the model " \
                   "(summarised)"


def test_messages_move_images_of_hidden_turns_to_the_first_kept_turn():
    from llava_app.chat.conversation import SUMMARY_LEAD, Conversation

    conv = Conversation()
    for k in range(4):
        if k in (0, 2):
            conv.add_image(f"sha{k}", f"/x/{k}.png", 10, 10)
        conv.ask(f"q{k}")
        conv.answer(f"a{k}")
    conv.add_image("sha-pending", "/x/p.png", 10, 10)  # waits for the next question, as before
    conv.first_visible, conv.context_summary = 3, "earlier talk"
    msgs = conv.messages("sys")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    parts = msgs[1]["content"]
    assert parts[0]["text"] == f"{SUMMARY_LEAD} earlier talk\n"
    assert [p.get("text") or p["ref"].label for p in parts[1:]] == ["Image 1:", "Image 1", "Image 2:", "Image 2", "q3"]
    assert conv.messages("sys", first_visible=0, summary="")[1]["content"][0]["text"] == "Image 1:"
    # Undo past the first kept turn: the rest stay hidden, the next question is seen with every image.
    conv.undo()
    conv.undo()
    assert conv.first_visible == 2 == len(conv.turns)
    conv.ask("again")
    labels = [p["ref"].label for m in conv.messages() for p in m["content"] if p["type"] == "image"]
    assert labels == ["Image 1", "Image 2", "Image 3"]


def test_fitting_and_downscaling_see_through_the_switchable_and_zerogpu_wrappers(local_backend):
    from llava_app.chat.context import ContextFitter
    from llava_app.engine.hosting.zerogpu import ZeroGPUBackend
    from llava_app.engine.switchable import SwitchableBackend

    engine = local_backend("tiny-random", context_length=WINDOW)
    wrapped = [SwitchableBackend(engine, factory=lambda name: engine),
               ZeroGPUBackend(engine, gpu=lambda duration: (lambda fn: fn))]
    for backend in wrapped:
        assert backend.counts_tokens and backend.context_length == WINDOW
        assert backend.image_resolution() == engine.image_resolution()
        hello = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
        assert backend.count_tokens(hello) == engine.count_tokens(hello) > 0
        # The interface only: the engine's own parts are reached through ``engine``, never forwarded.
        assert not hasattr(backend, "processor") and backend.engine is engine
        assert ContextFitter(backend).active
