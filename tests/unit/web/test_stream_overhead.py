"""Streaming updates stay cheap: the chat view's pictures are not re-hashed and copied on every update."""

from __future__ import annotations

from pathlib import Path


def test_chat_images_are_served_in_place_not_hashed_per_update(app_config, image_files):
    from gradio import processing_utils

    from llava_app.application import create_app
    from llava_app.chat.conversation import Conversation
    from llava_app.engine.base import Backend
    from llava_app.storage.images import ImageStore, load_image_file
    from llava_app.web.handlers.views import chat_value
    from llava_app.web.page.main import build_demo

    class NoModel(Backend):  # build_demo needs only the backend's description here; nothing is generated
        model_name, is_random = "none", True

        def stream(self, request):
            raise AssertionError("no generation in this test")

    store = ImageStore(app_config.data_dir + "/images")
    app = create_app(app_config, backend=NoModel(), store=store)
    demo = build_demo(app)
    app.close()
    chatbot = next(b for b in demo.blocks.values() if b.elem_id == "chatbot")
    conv = Conversation()
    for p in image_files:
        st = store.put(load_image_file(p))
        conv.add_image(st.sha256, st.path, st.width, st.height)
    conv.ask("Compare them")
    calls = []
    original = processing_utils.hash_file
    processing_utils.hash_file = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        shown = lambda path: app.shown_path(conv, path)  # noqa: E731 - the page's paths for this conversation
        payload = chatbot.postprocess(chat_value(conv, shown, partial="so far")).model_dump()
        out = processing_utils.move_files_to_cache(payload, chatbot, postprocess=True)
    finally:
        processing_utils.hash_file = original
    thumbnails = [part for m in out if isinstance(m["content"], list) for part in m["content"]
                  if part.get("component") == "gallery"]
    served = [(item["image"]["path"], item["caption"]) for part in thumbnails for item in part["value"]]
    assert calls == []  # no file was read to hash it
    # Served in place from the conversation's own folder (links to the stored files), each with its label;
    # never the store's content-addressed paths.
    folder = app.shown.root / conv.view_key
    assert sorted(served) == sorted((str(folder / Path(im.path).name), im.label) for im in conv.images)
    by_label = {label: path for path, label in served}
    assert all(Path(by_label[im.label]).read_bytes() == Path(im.path).read_bytes() for im in conv.images)
