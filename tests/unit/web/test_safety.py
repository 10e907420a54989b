"""What the server sends the page for hostile text: no live tag, no loading image, escaped toasts.

``tests/unit/web/test_display.py`` covers ``markdown.chat_markdown`` itself; here the whole chat
value goes through Gradio's own Chatbot, with questions and answers full of attacks.
"""

from __future__ import annotations

import re

import gradio as gr
import pytest

from llava_app.chat.conversation import Conversation
from llava_app.web.handlers.views import chat_value, plain

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<img src="https://tracker.invalid/pixel.png">',
    "![pixel](https://tracker.invalid/p.png)",
    "![ref pixel][1]\n\n[1]: https://tracker.invalid/r.png",
    '<svg onload="alert(1)"><circle r="5"/></svg>',
    "<iframe src=https://evil.invalid></iframe>",
    '<a href="javascript:alert(1)">click</a>',
    "<style>body{background:url(https://tracker.invalid/css.png)}</style>",
    "Nested <<script>script>alert(1)<</script>/script>",
    "<!-- hidden --><video poster=https://tracker.invalid/v.png>",
]
TAG = re.compile(r"<[A-Za-z/!?]")


@pytest.fixture(scope="module")
def rendered() -> str:
    conv = Conversation()
    for attack in ATTACKS:
        conv.ask(f"What about {attack}?")
        conv.answer(f"The model echoes {attack}")
    conv.ask("streaming")
    messages = chat_value(conv, str, partial="partial ![p](https://tracker.invalid/s.png) <img src=y>")
    sent = gr.Chatbot().postprocess(messages).model_dump()  # what Gradio hands to the browser
    texts = [m["content"][0]["text"] if isinstance(m["content"], list) else m["content"] for m in sent]
    return "\n".join(str(t) for t in texts)


def test_no_live_tag_reaches_the_page(rendered):
    assert not TAG.search(rendered), TAG.search(rendered)


def test_no_markdown_image_reaches_the_page(rendered):
    assert "![" not in rendered


def test_the_text_itself_is_still_shown(rendered):
    assert rendered.count("tracker.invalid") >= 6  # shown as text, not silently removed


def test_toasts_show_file_names_as_written():
    assert plain("<img src=x onerror=alert(1)>.png is not an image") == \
        "&lt;img src=x onerror=alert(1)&gt;.png is not an image"


def test_the_conversation_keeps_the_raw_text():
    conv = Conversation()
    conv.ask("<b>raw</b>")
    chat_value(conv, str)
    assert conv.turns[0].user == "<b>raw</b>"  # only the page's rendering changes; the model and the API get the text
