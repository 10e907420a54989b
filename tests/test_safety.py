"""HTML, scripts and Markdown images in questions and answers reach the page inert (server side)."""

from __future__ import annotations

import re

import gradio as gr
import pytest

from llava_app.conversation import Conversation
from llava_app.safety import inert_markdown, inert_text
from llava_app.ui import _chat_value

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
]


def _outside_code(md: str) -> str:
    """The parts of Markdown that are rendered (not inside code spans or fences)."""
    md = re.sub(r"^ {0,3}(`{3,}|~{3,}).*?(^ {0,3}\1|\Z)", "", md, flags=re.S | re.M)
    return re.sub(r"(`+).+?\1", "", md, flags=re.S)


@pytest.mark.parametrize("attack", ATTACKS)
def test_html_and_images_are_neutralised_outside_code(attack):
    out = _outside_code(inert_markdown(f"Look: {attack} done"))
    assert "<" not in out, out
    assert "![" not in out.replace("!\\[", ""), out


def test_formatting_links_and_code_survive():
    text = "**bold** and [a link](https://example.org) and `a < b` and\n```html\n<b>kept</b>\n```\nafter <i>x</i>"
    out = inert_markdown(text)
    assert "**bold**" in out and "[a link](https://example.org)" in out
    assert "`a < b`" in out and "```html\n<b>kept</b>\n```" in out  # code shows literally anyway
    assert out.endswith("after &lt;i>x&lt;/i>")


def test_unclosed_fence_and_stray_backticks():
    assert inert_markdown("```\n<b>streaming code") == "```\n<b>streaming code"  # still inside the fence
    assert inert_markdown("a ` b <img src=x>") == "a ` b &lt;img src=x>"  # a lone backtick is literal text
    assert inert_markdown("\\`<img src=x>`") == "\\`&lt;img src=x>`"  # an escaped backtick opens nothing


def test_toast_text_is_escaped():
    assert inert_text("<img src=x onerror=alert(1)>.png is not an image") == \
        "&lt;img src=x onerror=alert(1)&gt;.png is not an image"


def test_chat_messages_sent_to_the_page_are_inert():
    conv = Conversation()
    for attack in ATTACKS:
        conv.ask(f"What about {attack}?")
        conv.answer(f"The model echoes {attack}")
    conv.ask("streaming")
    messages = _chat_value(conv, partial="partial ![p](https://tracker.invalid/s.png) <img src=y>")
    # What Gradio's own Chatbot hands to the browser (it does not unescape anything).
    sent = gr.Chatbot().postprocess(messages).model_dump()
    texts = [m["content"][0]["text"] if isinstance(m["content"], list) else m["content"] for m in sent]
    rendered = "\n".join(str(t) for t in texts)
    assert "<" not in rendered.replace("&lt;", "")
    assert "![" not in rendered.replace("!\\[", "")
    assert "tracker.invalid" in rendered  # shown as text, not removed: the user sees what was written


def test_conversation_keeps_the_raw_text():
    conv = Conversation()
    conv.ask("<b>raw</b>")
    _chat_value(conv)
    assert conv.turns[0].user == "<b>raw</b>"  # only the rendering is escaped; the model and the API get the text
