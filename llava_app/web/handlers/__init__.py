"""What each event of the page and the API does: the conversation's events (``chat``), edits, branches
and earlier chats (``branches``), the API's endpoints (``api``), what belongs to a visitor (``session``,
``switch_policy``); what the events send (``inputs``), what the page shows (``views``, ``markdown``) and
the handlers' named results (``outputs``).

The handler classes are composed, not inherited: each is given one shared ``HandlerContext``
(``context``: the app's parts, the views, the error messages), and ``BranchHandlers`` the
``ChatHandlers`` whose Send it extends. ``Handlers`` puts them together for ``build_demo``
and for tests, which call the methods directly without a server.
"""

from __future__ import annotations

from llava_app.application import App
from llava_app.web.gradio_compat import GradioSessions
from llava_app.web.handlers.api import ApiHandlers
from llava_app.web.handlers.branches import BranchHandlers
from llava_app.web.handlers.chat import ChatHandlers
from llava_app.web.handlers.context import HandlerContext
from llava_app.web.handlers.session import SessionHandlers


class Handlers:
    """Every handler of the page and the API, by part: ``chat``, ``branches``, ``api``, ``session``.

    Example:
        >>> handlers = Handlers(app)  # doctest: +SKIP
        >>> handlers.chat.on_upload(["cat.png"], Conversation())  # doctest: +SKIP
    """

    def __init__(self, app: App, gradio_sessions: GradioSessions | None = None):
        self.context = HandlerContext(app, gradio_sessions)
        self.chat = ChatHandlers(self.context)
        self.branches = BranchHandlers(self.context, self.chat)
        self.api = ApiHandlers(self.context)
        self.session = SessionHandlers(app)
