"""What every handler class is given: the app's parts, and the helpers they share.

The helpers turn a conversation into what the page shows of it (the chat, the prompt panel, the
meter, the limits) and an error into a page message, in the browser's language. A leaf of the
handlers: it imports none of them, and each handler class (``chat``, ``branches``, ``api``) is
given one ``HandlerContext`` instead of inheriting these from another.
"""

from __future__ import annotations

import logging

import gradio as gr

from llava_app.application import App
from llava_app.chat.conversation import Conversation
from llava_app.chat.examples import language_of
from llava_app.errors import UserError
from llava_app.faults import traceback_only
from llava_app.messages import Message
from llava_app.web.gradio_compat import GradioSessions
from llava_app.web.handlers import views
from llava_app.web.handlers.outputs import Asked, Strip, Views
from llava_app.web.i18n import T
from llava_app.web.translations import localize

log = logging.getLogger(__name__)


def language(request: gr.Request | None) -> str:
    """The browser's language (``zh-CN`` or ``en``), from the request's accept-language."""
    return language_of(request.headers.get("accept-language") if request is not None else None)


def page_message(exc: BaseException, lang: str = "en") -> str:
    """The one way an error becomes a page message, in ``lang`` (the API's: English): ours as written (escaped),
    anything else by its type only."""
    if isinstance(exc, UserError):
        return views.plain(exc.message, lang)
    log.error("generation failed: %s", type(exc).__name__, exc_info=traceback_only(exc))
    return views.plain(Message("notice.model_failed", kind=type(exc).__name__), lang)


class HandlerContext:
    """The app's parts (``app``, ``service``, ``saved``, ``config``, Gradio's sessions) and what the page shows
    of a conversation."""

    def __init__(self, app: App, gradio_sessions: GradioSessions | None = None):
        self.app = app
        self.service = app.service
        self.saved = app.saved
        self.config = app.config
        self.gradio = gradio_sessions

    def remember_loop(self) -> None:
        """Called from an event handler: Gradio's records of a gone client are freed on this loop."""
        if self.gradio is not None:
            self.gradio.remember_loop()

    # ----- views --------------------------------------------------------------------------
    def views(self, conv: Conversation, partial: str | None = None, waiting: int | None = None,
              lang: str = "en") -> Views:
        """Values for the chat, the prompt panel, its stats line and the context meter (in ``lang``)."""
        with conv.lock:  # one consistent state, while the generation thread may write the answer
            return self._views(conv, partial, waiting, lang)

    def _views(self, conv: Conversation, partial: str | None, waiting: int | None, lang: str) -> Views:
        info = conv.last_prompt
        chat = views.chat_value(conv, self.shown(conv), partial, waiting, lang, self.pointer(conv))
        return Views(chat, (info.text if info else ""),
                     views.prompt_stats(info, str(T("no_prompt")), lang), self.meter(conv, lang))

    def shown(self, conv: Conversation) -> views.Shown:
        """The paths the page is given for ``conv``'s pictures: under its own unguessable folder, never the store."""
        return lambda path: self.app.shown_path(conv, path)

    def pointer(self, conv: Conversation) -> views.Pointer:
        """What each answer of ``conv`` points at (read from the answer and the pictures each time it is shown)."""
        return lambda turn: self.service.pointed(conv, turn)

    def gallery(self, conv: Conversation) -> list[tuple[str, str]]:
        """The strip's value for ``conv``."""
        return views.gallery_value(conv, self.shown(conv))

    def meter(self, conv: Conversation, lang: str = "en") -> str:
        """The context meter's text."""
        return views.meter_text(conv, *self.service.context_usage(conv), lang=lang)

    @staticmethod
    def warn(message: Message | str, lang: str) -> None:
        """A toast with the server's ``message`` in the browser's language (a ``Message`` is rendered and escaped
        here; a string comes escaped already)."""
        gr.Warning(views.plain(message, lang) if isinstance(message, Message) else message)

    def limits_text(self, conv: Conversation, lang: str = "en") -> str:
        """The limits next to the strip, shown before anyone reaches them."""
        per = self.service.max_images_per_message
        count = (Message("strip.count_per_question", count=len(conv.images), limit=self.service.max_images, per=per)
                 if per and per < self.service.max_images else
                 Message("strip.count", count=len(conv.images), limit=self.service.max_images))
        return localize(count, lang)

    def images(self, conv: Conversation, notice: str, lang: str = "en") -> Strip:
        """Values for the strip, the conversation, the notice, the limits and the meter."""
        return Strip(self.gallery(conv), conv, notice, self.limits_text(conv, lang), self.meter(conv, lang))

    def asked(self, box, conv: Conversation, notice, lang: str = "en", partial: str | None = None) -> Asked:
        """After a question is sent (or refused): the box holds ``box``, then the strip and what the page shows
        (``partial``: the answer to come)."""
        strip = self.images(conv, notice, lang)
        return Asked(box, strip.gallery, conv, notice, strip.limits, *self.views(conv, partial, lang=lang))
