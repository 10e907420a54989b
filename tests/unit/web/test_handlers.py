"""The page's handlers, called as methods without a server, on the recording fake engine (no torch)."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import serving
from fakes import RecordingBackend

from llava_app.application import create_app
from llava_app.chat.conversation import Conversation
from llava_app.config import Config
from llava_app.web.handlers import Handlers


@pytest.fixture
def setup(tmp_path):
    backend = RecordingBackend()
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), max_images=3, max_new_tokens=8)
    app = create_app(config, backend=backend)
    yield app, Handlers(app), backend
    app.close()


def tab(name: str = "tab-1"):
    """What Gradio hands a handler as ``gr.Request``: here only the session and the headers are read."""
    return SimpleNamespace(session_hash=name, username=None, headers={})


def generate(handlers, conv, system_prompt="", temperature=0.0):
    """Run ``on_generate`` to its end; returns every update it sent."""
    async def run():
        return [update async for update in handlers.chat.on_generate(conv, system_prompt, temperature, 0.9, 8)]
    return asyncio.run(run())


def regenerate(handlers, conv, temperature=0.0):
    """Regenerate as the page does it: ``on_regenerate``, then its own chained ``on_generate_again``."""
    handlers.chat.on_regenerate(conv, temperature)

    async def run():
        return [u async for u in handlers.chat.on_generate_again(conv, "", temperature, 0.9, 8)]
    return asyncio.run(run())


def test_upload_ask_stream_and_undo_through_the_handlers(setup, image_files):
    app, handlers, backend = setup
    conv = Conversation()
    gallery, conv, notice, limits, meter = handlers.chat.on_upload([str(p) for p in image_files[:2]], conv)
    assert [label for _, label in gallery] == ["Image 1", "Image 2"] and notice == "Added Image 1, Image 2."
    assert limits == "2 of 3 images"  # shown before the limit is reached
    question, gallery, conv, notice, limits, chat, *_ = handlers.chat.on_submit(
        {"text": "Compare Image 1 and Image 2", "files": []}, conv)
    assert question == "" and chat[-1] == {"role": "assistant", "content": ""}  # the answer's place is shown
    backend.enqueue("They", " differ.")
    updates = generate(handlers, conv, system_prompt="Be brief.")
    final_chat = updates[-1][2]
    assert final_chat[-2]["content"] == "They differ."  # then the answer's footer
    assert "2 tokens" in final_chat[-1]["content"] and "answer-footer" in final_chat[-1]["content"]
    assert "[system] Be brief." in backend.last_prompt and backend.last_prompt.count("<image>") == 2
    assert conv.turns[-1].stats.completion_tokens == 2
    text, conv, chat, prompt, stats, meter = handlers.chat.on_undo(conv, "")
    assert text == "Compare Image 1 and Image 2" and conv.turns == [] and chat == []  # the images wait again
    assert [im.label for im in conv.pending_images] == ["Image 1", "Image 2"]


def test_a_refused_question_is_a_message_and_the_box_keeps_it(setup):
    _, handlers, _ = setup
    conv = Conversation()
    with pytest.warns(UserWarning, match="Type a question first"):  # gr.Warning outside a page event
        question, *_ = handlers.chat.on_submit("   ", conv)
    assert conv.turns == [] and question != ""


def test_an_engine_failure_is_a_message_and_the_question_returns_to_the_box(setup):
    app, handlers, backend = setup

    def broken(request):
        raise RuntimeError("CUDA error: device-side assert")
        yield

    backend.stream = broken
    conv = Conversation()
    handlers.chat.on_submit("Hello?", conv)
    with pytest.warns(UserWarning) as caught:
        updates = generate(handlers, conv)
    assert [str(w.message) for w in caught] == [
        "The model failed on this request (RuntimeError). Your conversation is kept; try again."]
    assert updates[-1][0] == "Hello?" and conv.turns == []  # nothing of the engine's text reaches the page


@pytest.mark.parametrize("how", ["new chat", "reset", "import"])
def test_new_chat_reset_and_import_replace_the_conversation_tied_to_the_same_tab(setup, image_files, tmp_path, how):
    """One ``replace``: the old conversation ends, the new one belongs to the tab, so closing the tab ends it."""
    app, handlers, backend = setup
    old = Conversation()
    app.service.touch(old, client="tab-1")
    handlers.chat.on_upload([str(image_files[0])], old)
    handlers.chat.on_submit("What is it?", old)
    generate(handlers, old)
    if how == "new chat":
        new = handlers.chat.on_new_chat(old, tab())[0]
    elif how == "reset":
        new = handlers.api.api_reset(old, tab())
    else:
        exported = handlers.chat.on_export("json", old, "")
        new = handlers.chat.on_import(exported, old, "", tab())[0]
        assert [im.label for im in new.images] == ["Image 1"] and new.turns[0].assistant == "ok"
    live = {c.id for c in app.service.sessions.live()}
    assert old.id not in live and new.id in live and old.id in backend.forgotten
    assert app.service.close_client("tab-1") is True
    assert new.id not in {c.id for c in app.service.sessions.live()}  # closing the tab ended the new one too


def test_export_with_nothing_to_export_says_so(setup):
    _, handlers, _ = setup
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert handlers.chat.on_export("zip", Conversation(), "") is None
    assert "nothing to export yet" in str(caught[-1].message)


def test_a_failed_import_says_so_in_the_notice_too(setup, tmp_path):
    """The notice under the strip is replaced (a stale "Imported." from an earlier import would say the opposite)."""
    _, handlers, _ = setup
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    conv = Conversation()
    with pytest.warns(UserWarning) as caught:
        kept, _, notice, *_ = handlers.chat.on_import(str(broken), conv, "", tab())
    assert kept is conv and notice == str(caught[-1].message) and "broken.json" in notice


def test_the_api_reports_context_and_streams_through_the_same_service(setup, image_files):
    _, handlers, backend = setup
    conv = Conversation()
    backend.enqueue("A", " red", " square.")

    async def ask():
        chat = handlers.api.api_chat("What is it?", [str(image_files[0])], [], [], conv, tab())
        return [text async for text, _ in chat]
    texts = asyncio.run(ask())
    assert texts[-1] == "A red square."
    summary = handlers.api.api_context(conv)
    assert summary["image_count"] == 1 and summary["turns"][0]["assistant"] == "A red square."


def test_a_removed_image_stays_in_the_chat_as_a_labelled_placeholder(setup, image_files):
    _, handlers, _ = setup
    conv = Conversation()
    handlers.chat.on_upload([str(p) for p in image_files[:2]], conv)
    handlers.chat.on_submit({"text": "Compare Image 1 and Image 2", "files": []}, conv)
    generate(handlers, conv)
    gallery, conv, notice, limits, _ = handlers.chat.on_delete([(conv.images[1].path, "Image 2")], conv)
    assert [label for _, label in gallery] == ["Image 2"] and notice == "Removed Image 1." and limits == "1 of 3 images"
    chat = handlers.context.views(conv)[0]
    assert chat[1] == {"role": "user", "content": "*[Image 1, removed]*"}  # under the turn that showed it
    assert [item["caption"] for item in chat[0]["content"].value] == ["Image 2"]
    # An image removed before any question carried it leaves no trace.
    handlers.chat.on_upload([str(image_files[2])], conv)
    handlers.chat.on_delete([(conv.images[0].path, "Image 2")], conv)
    assert [m["content"] for m in handlers.context.views(conv)[0] if isinstance(m["content"], str)].count(
        "*[Image 1, removed]*") == 1 and len(conv.removed) == 1


def test_links_in_the_question_box_are_fetched_into_the_strip(tmp_path, image_files):
    """With --image-urls, a box holding only links fetches them (loopback allowed by the operator), and a
    question that mixes text and a link fetches it too and asks about it by its label."""
    bodies = {"/cat.png": ("image/png", image_files[0].read_bytes()),
              "/dog.png": ("image/png", image_files[1].read_bytes())}
    config = Config(model="recording-fake", data_dir=str(tmp_path / "data"), image_urls=True,
                    image_url_allow="127.0.0.1")
    app = create_app(config, backend=RecordingBackend())
    with serving(bodies) as address, contextlib.closing(app):
        handlers, conv = Handlers(app), Conversation()
        url = address + "/cat.png"
        box, gallery, conv, notice, *_ = handlers.chat.on_submit({"text": f"  {url}  ", "files": []}, conv)
        assert box == "" and [label for _, label in gallery] == ["Image 1"] and notice == "Added Image 1."
        assert conv.turns == []  # a link is not a question
        _, _, conv, notice, *_ = handlers.chat.on_submit({"text": f"What is at {url}?", "files": []}, conv)
        assert conv.turns[-1].user == f"What is at {url}?"  # already here (as Image 1): asked as written
        assert "already in this conversation as Image 1" in notice
        conv.answer("A cat.")
        dog = url.replace("cat", "dog")
        box, gallery, conv, notice, *_ = handlers.chat.on_submit({"text": f"And at {dog}, a dog?", "files": []},
                                                                 conv)
        assert [label for _, label in gallery] == ["Image 1", "Image 2"] and notice == "Added Image 2."
        assert box == "" and conv.turns[-1].user == "And at Image 2, a dog?"  # fetched, then asked about


def test_a_link_in_a_question_where_links_are_not_fetched_says_why_to_the_person(setup, caplog):
    """Without --image-urls the question is asked, and the notice tells the person what to do; the
    operator's flag is in the log, not on the page."""
    app, handlers, _ = setup
    conv = Conversation()
    with caplog.at_level("INFO"):
        box, _, conv, notice, *_ = handlers.chat.on_submit({"text": "What is at https://example.com/a.png?",
                                                             "files": []}, conv)
    assert box == "" and conv.turns[-1].user == "What is at https://example.com/a.png?"
    assert notice.startswith("This server does not fetch pictures from links") and "--" not in notice
    assert "--image-urls" in caplog.text
    with pytest.warns(UserWarning):  # only a link: nothing is asked, the box keeps it, the toast says why
        box, _, conv, notice, *_ = handlers.chat.on_submit({"text": "https://example.com/b.png", "files": []},
                                                           conv)
    assert len(conv.turns) == 1 and "download it and attach it" in notice


def test_a_batch_over_the_per_question_limit_gets_one_message(setup, tmp_path):
    app, handlers, _ = setup
    from PIL import Image

    files = []
    for i, color in enumerate(["red", "green", "blue", "white", "black", "gray"]):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", (32, 24), color).save(path)
        files.append(str(path))
    app.service.max_images, app.service.max_images_per_message = 6, 4
    with pytest.warns(UserWarning) as caught:
        gallery, conv, notice, limits, _ = handlers.chat.on_upload(files, Conversation())
    assert len(gallery) == 4 and limits == "4 of 6 images · up to 4 with one question"
    assert [str(w.message) for w in caught] == [
        "p4.png, p5.png: At most 4 new images go with one question, and 4 are waiting already. Ask about them "
        "first, then add more."]


def test_the_person_chooses_a_videos_keyframes_and_a_pdfs_pages(setup, tmp_path):
    from media_files import make_pdf, make_video

    _, handlers, _ = setup
    clip, report = tmp_path / "clip.mp4", tmp_path / "report.pdf"
    clip.write_bytes(make_video())
    report.write_bytes(make_pdf(3))
    gallery, conv, *_ = handlers.chat.on_upload([str(clip)], Conversation(), 2, "")
    assert [c.split(" · ")[1].split(" @ ")[0] for _, c in gallery] == ["clip.mp4", "clip.mp4"]  # two keyframes
    gallery, conv, *_ = handlers.chat.on_upload([str(report)], Conversation(), 2, "3")
    assert [c for _, c in gallery] == ["Image 1 · report.pdf p. 3"]


def test_the_strips_delete_and_change_events_of_one_removal_say_so_once_in_either_order(setup, image_files):
    """Removing the strip's last picture sends a delete and an (empty) change event, run at once in either
    order: the second finds nothing gone and leaves the page alone, so "Removed Image 1." stays."""
    _, handlers, _ = setup
    for first, second in (("change", "delete"), ("delete", "change")):
        conv = Conversation()
        handlers.chat.on_upload([str(image_files[0])], conv)
        run = {"change": lambda c=conv: handlers.chat.on_gallery_change([], c),
               "delete": lambda c=conv: handlers.chat.on_delete([], c)}
        gallery, _, notice, limits, _ = run[first]()
        assert gallery == [] and notice == "Removed Image 1." and limits.startswith("0 of")
        later = run[second]()
        # nothing written but the count: the notice keeps what the first one said
        assert (later.gallery, later.state, later.notice) == (gr.skip(),) * 3 and later.limits in (gr.skip(), limits)
        assert conv.images == []


def test_clear_all_asks_first_and_undo_puts_the_pictures_back_with_their_labels(setup, image_files):
    app, handlers, _ = setup
    conv = Conversation()
    handlers.chat.on_upload([str(p) for p in image_files[:2]], conv)
    handlers.chat.on_submit({"text": "Compare Image 1 and Image 2", "files": []}, conv)
    conv.answer("Both red.")
    notice, confirm, question = handlers.chat.on_clear_ask(conv)
    assert question == "Remove all 2 pictures from this chat? The model will no longer see them."
    assert confirm["visible"] is True and len(conv.images) == 2  # asked, nothing removed yet
    cleared = handlers.chat.on_clear(conv, "")
    assert cleared.gallery == [] and cleared.notice == "Removed Image 1, Image 2. Undo puts them back."
    assert cleared.limits.startswith("0 of") and cleared.undo_clear["visible"] is True
    assert conv.last_prompt.n_images == 0  # "What the model sees" follows at once
    assert "*[Image 1, removed]*" in str(cleared.chatbot)
    back = handlers.chat.on_undo_clear(conv, "")
    assert [label for _, label in back.gallery] == ["Image 1", "Image 2"]
    assert back.notice == "Put back Image 1, Image 2."
    assert conv.turns[0].images == [1, 2] and conv.removed == [] and conv.last_prompt.n_images == 2
    assert back.undo_clear["visible"] is False and back.limits.startswith("2 of")
    again = handlers.chat.on_undo_clear(conv, "")  # once only
    assert again.notice == "These pictures can no longer be put back." and len(conv.images) == 2
    notice, confirm, _ = handlers.chat.on_clear_ask(Conversation())
    assert notice == "There are no pictures to remove." and confirm["visible"] is False


def test_a_camera_photo_joins_the_strip_as_the_next_picture_and_the_count_follows_any_change(setup, image_files):
    _, handlers, _ = setup
    conv = Conversation()
    handlers.chat.on_upload([str(image_files[0])], conv)
    taken = handlers.chat.on_camera(str(image_files[1]), conv)
    assert [label for _, label in taken.gallery] == ["Image 1", "Image 2"] and taken.notice == "Added Image 2."
    assert taken.camera is None and taken.camera_box["visible"] is False  # emptied and closed
    assert handlers.chat.on_camera(None, conv) == (gr.skip(),) * 7  # the camera emptied: nothing to take
    # The strip set by anything (a reload, a chat opened): its count says what it shows.
    shown = handlers.chat.on_gallery_change([(im.path, im.label) for im in conv.images], conv)
    assert shown.limits == "2 of 3 images" and shown.gallery == gr.skip()


def test_a_closed_tab_already_gone_has_gradios_records_freed_later(setup):
    """``on_unload`` of a client housekeeping already ended: Gradio's records (made again by this very event)
    are freed once it has finished, through the Gradio sessions the handlers were given."""
    app, _, _ = setup
    dropped = []
    sessions = SimpleNamespace(remember_loop=lambda: None, drop_later=lambda *args: dropped.append(args))
    asyncio.run(Handlers(app, sessions).chat.on_unload(tab("gone")))
    assert dropped == [("gone", 2.0)]


def test_regenerate_samples_its_own_answer_and_leaves_nothing_behind_for_the_next_question(setup):
    """Regenerate at temperature 0 samples its answer at 0.7 (greedy decoding would write the same answer again);
    a Regenerate whose answer never ran (the click's event failed, the tab went away) leaves nothing on the
    server: the next ordinary question is answered at the person's temperature, 0."""
    app, handlers, backend = setup
    conv = Conversation()
    handlers.chat.on_submit("What is it?", conv)
    generate(handlers, conv, temperature=0.0)
    assert backend.requests[-1].params.temperature == 0.0
    backend.enqueue("Another", " answer.")
    regenerate(handlers, conv, temperature=0.0)
    assert backend.requests[-1].params.temperature == 0.7 and conv.turns[-1].assistant == "Another answer."
    conv, notice, *_ = handlers.chat.on_regenerate(conv, 0.0)  # its own answer never runs
    assert notice.startswith("Regenerating with temperature 0.7")
    handlers.chat.on_submit("And now?", conv)
    generate(handlers, conv, temperature=0.0)
    assert conv.turns[-1].user == "And now?" and backend.requests[-1].params.temperature == 0.0
    regenerate(handlers, conv, temperature=0.3)  # a temperature that samples already is kept
    assert backend.requests[-1].params.temperature == 0.3


def test_a_regenerated_answer_cancelled_midway_stops_the_model(setup):
    """Gradio cancels the task of a client that went away: ``on_generate_again`` passes that on to the answer in
    it, whose request's cancel flag is set at once, as for an ordinary answer."""
    app, handlers, backend = setup
    conv = Conversation()
    handlers.chat.on_submit("What is it?", conv)
    generate(handlers, conv)
    handlers.chat.on_regenerate(conv, 0.0)
    backend.enqueue("One", " two", " three.")
    backend.hold.clear()  # the engine holds after its first chunk

    async def cancel_after_the_first_words():
        begun = asyncio.Event()

        async def read():
            async for update in handlers.chat.on_generate_again(conv, "", 0.0, 0.9, 8):
                if "One" in str(update[2][-1]["content"]):
                    begun.set()

        task = asyncio.create_task(read())
        await asyncio.wait_for(begun.wait(), 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return backend.requests[-1].cancel.is_set()

    try:
        assert asyncio.run(cancel_after_the_first_words())
    finally:
        backend.hold.set()
