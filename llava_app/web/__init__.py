"""The web layer: the Gradio page, its handlers and views, the /v1 endpoint, translations.

The only code that imports gradio.
"""
