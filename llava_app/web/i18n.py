"""The page's translated text as Gradio objects (the tables themselves are in ``translations``)."""

from __future__ import annotations

import html
import json

import gradio as gr

from llava_app.web.translations import TRANSLATIONS, key, script_texts

# The page's text follows the browser's language (English, Simplified Chinese).
I18N = gr.I18n(**TRANSLATIONS)


def T(name: str):
    """The page text ``name`` (a key of ``translations.EN``), translated in the browser."""
    return I18N(key(name))


def model_line(name: str) -> str:
    """The header line naming the model (the prefix is translated in the browser)."""
    return f"{T('model_prefix')} `{html.escape(name)}`"


def page_script(source: str) -> str:
    """page.js with its own texts (toast titles, the rename prompt, the delete confirmation) in both languages."""
    return source.replace("LLAVA_TEXTS", json.dumps(script_texts(), ensure_ascii=False))
