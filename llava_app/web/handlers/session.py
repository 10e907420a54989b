"""Handlers of what belongs to a visitor rather than to a conversation: settings kept per browser,
who may switch the model, and the tab that finds its browser's conversation open elsewhere.

Apart from ``ChatHandlers`` (the conversation's events); ``page.main._wire_preferences`` wires them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import gradio as gr

from llava_app.application import App
from llava_app.errors import UserError
from llava_app.messages import Joined, Message
from llava_app.web.handlers import views
from llava_app.web.handlers.context import language, page_message
from llava_app.web.handlers.switch_policy import REFUSED, SwitchPolicy
from llava_app.web.i18n import T, model_line
from llava_app.web.translations import localize

MAX_SYSTEM_PROMPT_CHARS = 8000  # a longer saved value is not restored (localStorage is the user's to edit)
MAX_SWITCH_ERRORS = 64  # failed switches whose page has not shown why yet (admins only; an API client never does)


class SessionHandlers:
    """Settings restored from the browser, the model picker's policy, the second-tab notice."""

    def __init__(self, app: App, policy: SwitchPolicy | None = None):
        self.app = app
        self.service = app.service
        self.config = app.config
        self.policy = policy or SwitchPolicy.from_config(app.config)
        #: why each session's last switch failed, until its page shows it (``after_failed_switch``)
        self._switch_errors: OrderedDict[str | None, Message | str] = OrderedDict()
        self._lock = threading.Lock()  # the switch and the page's failure event run in threads of their own

    # ----- settings kept per browser (system prompt, temperature, top-p, max new tokens) ------
    @staticmethod
    def on_settings_change(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float) -> dict:
        """The settings as the browser keeps them (its ``gr.BrowserState``)."""
        return {"system_prompt": system_prompt, "temperature": temperature, "top_p": top_p,
                "max_new_tokens": max_new_tokens}

    def on_settings_load(self, kept: Any) -> list:
        """Page load: the browser's kept settings back in their controls; a missing or odd value is left as is."""
        kept = kept if isinstance(kept, dict) else {}
        limit = self.config.max_new_tokens_limit
        checks = {
            "system_prompt": lambda v: isinstance(v, str) and len(v) <= MAX_SYSTEM_PROMPT_CHARS,
            "temperature": lambda v: _number(v) and 0.0 <= v <= 2.0,
            "top_p": lambda v: _number(v) and 0.05 <= v <= 1.0,
            "max_new_tokens": lambda v: _number(v) and 1 <= v <= limit,
        }
        out = []
        for name, ok in checks.items():
            value = kept.get(name)
            out.append(gr.update(value=int(value) if name == "max_new_tokens" else value)
                       if value is not None and ok(value) else gr.skip())
        return out

    # ----- who may switch the model -----------------------------------------------------------
    def on_picker_load(self, request: gr.Request):
        """Page load: the picker is shown to those the policy lets switch, on the model held now."""
        allowed = self.policy.allows(request.username if request else None)
        return gr.update(visible=allowed), gr.update(value=self.service.model_name)

    def on_switch(self, name: str, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Load another allowed model for everyone, if this user may; a refusal or failure is an error
        (API callers get it as such; the page's ``after_failed_switch`` then puts the picker back)."""
        lang = language(request)
        if not self.policy.allows(request.username if request else None):
            raise gr.Error(views.plain(REFUSED, lang), print_exception=False)
        try:
            self.service.switch_model(name, report=lambda fraction, message: progress(fraction,
                                                                                      desc=localize(message, lang)))
        except Exception as exc:  # noqa: BLE001 - any failure leaves the previous model, and says why
            self._failed(request, exc.message if isinstance(exc, UserError) else Message(
                "notice.model_failed", kind=type(exc).__name__))
            raise gr.Error(page_message(exc, lang), print_exception=False) from None
        return (model_line(self.service.model_name), gr.update(visible=self.service.is_random),
                str(T("model_loaded")), gr.update(value=self.service.model_name))

    def after_failed_switch(self, request: gr.Request):
        """After a refused or failed switch: the picker shows the model still loaded, with the reason."""
        lang = language(request)
        allowed = self.policy.allows(request.username if request else None)
        with self._lock:
            reason = self._switch_errors.pop(_session(request), "") if allowed else REFUSED
        name = self.service.model_name
        still = Joined([reason, Message("switch.still_using", name=name)])
        status = views.plain(reason if name in str(reason) else still, lang)
        return (model_line(name), gr.update(visible=self.service.is_random), status, gr.update(value=name))

    def _failed(self, request: gr.Request | None, reason: Message | str) -> Message | str:
        """Keep why this session's switch failed for its own page (an API client's stays until pushed out)."""
        with self._lock:
            self._switch_errors[_session(request)] = reason
            self._switch_errors.move_to_end(_session(request))
            while len(self._switch_errors) > MAX_SWITCH_ERRORS:
                self._switch_errors.popitem(last=False)
        return reason


def _session(request: gr.Request | None) -> str | None:
    """The browser tab (or API client) a request comes from."""
    return getattr(request, "session_hash", None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
