"""How chat text is shown: as written, with no live HTML and no image that loads from elsewhere."""

from __future__ import annotations

from llava_app.web.handlers.markdown import chat_markdown


def test_html_is_shown_as_typed_not_rendered():
    text = 'hi <img src=x onerror="alert(1)"> <script>alert(2)</script> <!-- c -->'
    assert chat_markdown(text) == 'hi &lt;img src=x onerror="alert(1)"> &lt;script>alert(2)&lt;/script> &lt;!-- c -->'


def test_comparisons_and_plain_text_are_left_alone():
    for text in ["x < y and a<3", "1 > 0", "Image 1 is brighter than Image 2.", "> a quote", "**bold** _it_"]:
        assert chat_markdown(text) == text


def test_markdown_images_become_links_inline_and_by_reference():
    text = "see ![chart](http://outside.invalid/a.png) and ![ref][1]\n\n[1]: http://outside.invalid/b.png"
    out = chat_markdown(text)
    assert "![" not in out
    assert "[image: chart](http://outside.invalid/a.png)" in out and "[image: ref][1]" in out


def test_code_is_left_as_written_even_while_a_fence_is_still_open():
    assert chat_markdown("use `<b>` here") == "use `<b>` here"
    block = "```html\n<img src=x>\n![a](b)\n```\nthen <b>"
    assert chat_markdown(block) == "```html\n<img src=x>\n![a](b)\n```\nthen &lt;b>"
    assert chat_markdown("streaming ```\n<div>") == "streaming ```\n<div>"
