"""The web layer: the Gradio page, its handlers and views, the /v1 endpoint, translations.

The only code that imports gradio; before it does, Gradio's stub writing at import is left out
(``gradio_compat.no_stubs_at_import``).
"""

from llava_app.web.gradio_compat import no_stubs_at_import

no_stubs_at_import()
