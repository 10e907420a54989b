"""The page's handlers for edits, branches, earlier chats and share links (their API: ``api``).

``BranchHandlers`` is given the shared ``HandlerContext`` (the app's parts, the views, the
error messages) and the ``ChatHandlers`` whose Send and attach it extends while a question is
edited. They return the conversation and what the page shows of it.
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from llava_app.chat import branches
from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.web.handlers import views
from llava_app.web.handlers.chat import ChatHandlers
from llava_app.web.handlers.context import HandlerContext
from llava_app.web.handlers.context import language as _lang
from llava_app.web.handlers.context import page_message as _message
from llava_app.web.handlers.inputs import message_files, message_text, numbers, whole
from llava_app.web.handlers.outputs import Action, Attached, Sent, skipped
from llava_app.web.translations import localize

#: the chat's and the list's links (``views.turn_tools``, ``views.chats_html``), as page.js passes them on
ACTION = re.compile(r"^(?:(?P<verb>edit)-(?P<turn>\d+)|branch-(?P<bturn>\d+)-(?P<index>\d+)|"
                    r"(?P<chat>open|rename|delete)-(?P<row>[A-Za-z0-9_-]+)(?::(?P<title>.*))?)$", re.S)


def _closed_bar() -> dict[str, Any]:
    """The edit bar once no question is edited any more (its title and pictures stay as they are)."""
    return {"editing": None, "edit_bar": gr.update(visible=False)}


def _bar_as_is() -> dict[str, Any]:
    """``on_send``'s edit bar when no edited question was asked: as it is."""
    return {"editing": gr.skip(), "edit_bar": gr.skip(), "keep": gr.skip()}


class BranchHandlers:
    """Edit, the "< 2/3 >" switch, the list of earlier chats, Share (Regenerate-as-sibling is ``ChatHandlers``')."""

    def __init__(self, context: HandlerContext, chat: ChatHandlers):
        self.app = context.app
        self.service = context.service
        self.saved = context.saved
        self.chat = chat  # a new question (``on_submit``) and files put in the box (``on_attach``)
        # the shared helpers, under the names these handlers call them by
        self.views, self.warn, self._asked = context.views, context.warn, context.asked
        self.context = context

    # ----- page events ------------------------------------------------------------------------
    def on_branch(self, turn: Any, index: Any, conv: Conversation, system_prompt: str, lang: str = "en") -> Action:
        """Show version ``index`` (0-based) of turn ``turn``: the conversation, the gallery and the views."""
        try:
            self.service.switch_branch(conv, whole(turn, "turn"), whole(index, "index"))
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return self._shown(conv, lang)
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        return self._shown(conv, lang)

    def _shown(self, conv: Conversation, lang: str = "en") -> Action:
        """The conversation, its strip and its views (the rest left as it is)."""
        return skipped(Action)._replace(state=conv, gallery=self.context.gallery(conv),
                                        **self.views(conv, lang=lang)._asdict())

    def on_open(self, row: str, conv: Conversation, request: gr.Request, lang: str = "en") -> Action:
        """An earlier chat in place of this one (which stays in the list): the conversation, the gallery,
        the question box (a question never answered goes back in it) and the views."""
        try:
            opened, pending = self.app.reopen(conv, str(row or ""), request.session_hash)
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return self._shown(conv, lang)
        return self._shown(opened, lang)._replace(question=pending if pending is not None else "")

    def on_rename(self, row: str, title: str, conv: Conversation, lang: str = "en") -> list[dict[str, Any]]:
        """Title an earlier chat; returns the list again."""
        try:
            self.saved.rename(conv, str(row or ""), str(title or ""))
        except UserError as exc:
            gr.Warning(_message(exc, lang))
        return self.saved.listing(conv)

    def on_delete_chat(self, row: str, conv: Conversation, lang: str = "en") -> list[dict[str, Any]]:
        """Delete an earlier chat; returns the list again."""
        try:
            self.saved.delete(conv, str(row or ""))
        except UserError as exc:
            gr.Warning(_message(exc, lang))
        return self.saved.listing(conv)

    def on_share(self, conv: Conversation, lang: str = "en") -> dict[str, Any]:
        """A read-only snapshot of the branch shown: ``{"url": "/share/<token>", "token", "expires"}`` (the
        page prefixes its own origin); ``{}`` with a message when there is nothing to share or sharing is off."""
        try:
            token, expires = self.app.share_links.share(conv, self.service.model_name)
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return {}
        return {"url": f"/share/{token}", "token": token, "expires": expires}

    def on_revoke(self, link: str, conv: Conversation, lang: str = "en") -> bool:
        """Revoke one of this browser's links (the token or the whole URL); True when it is gone."""
        try:
            self.app.share_links.revoke(conv, str(link or ""))
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return False
        return True

    # ----- the page's links, the edit bar, the list, Share ---------------------------------------
    def on_action(self, action: str, conv: Conversation, system_prompt: str, request: gr.Request) -> Action:
        """A link of the chat or of the list, clicked: "edit-2", "branch-1-0", "open-<id>", "rename-<id>:<title>",
        "delete-<id>". Returns the conversation, the strip, the question box, the notice, the list, the edit
        bar (turn, shown, title, pictures) and the views; what an action leaves alone is skipped."""
        match = ACTION.match(str(action or ""))
        out = skipped(Action)
        if match is None:
            return out
        lang = _lang(request)
        if match["verb"]:
            return self._start_edit(int(match["turn"]), conv, out, lang)
        if match["bturn"] is not None:
            shown = self.on_branch(match["bturn"], match["index"], conv, system_prompt, lang)
            # the title follows the branch
            return shown._replace(listing=self.chats_view(conv, request=request), **_closed_bar())
        row = match["row"]
        if match["chat"] == "open":
            opened = self.on_open(row, conv, request, lang)
            return opened._replace(listing=self.chats_view(opened.state, request=request), **_closed_bar())
        if match["chat"] == "rename":
            return out._replace(listing=self.chats_view(conv, self.on_rename(row, match["title"] or "", conv, lang),
                                                         request))
        current = self.saved.key_of(conv) == row
        listing = self.on_delete_chat(row, conv, lang)
        if current and self.saved.key_of(conv) != row:  # the chat on the screen was deleted: a new one instead
            fresh = self.app.replace(conv, Conversation(), request.session_hash)
            return self._shown(fresh, lang)._replace(question="", notice="", listing=self.chats_view(
                fresh, request=request), **_closed_bar())
        return out._replace(listing=self.chats_view(conv, listing, request))

    def _start_edit(self, turn: int, conv: Conversation, out: Action, lang: str) -> Action:
        """The question of ``turn`` goes in the box, and the edit bar says so and lists its pictures."""
        with conv.lock:
            answered = 0 <= turn < len(conv.turns) and conv.turns[-1].assistant is not None
            question = conv.turns[turn] if answered else None
            labels = branches.describe(conv)[turn]["images"] if answered else []
        if question is None or self.service.is_running(conv):
            self.warn(Message("edit.wait"), lang)
            return out
        title = Message("edit.bar_ticked" if labels else "edit.bar_attached", number=turn + 1)
        return out._replace(question={"text": question.user, "files": []}, editing=turn,
                            edit_bar=gr.update(visible=True), edit_title=localize(title, lang),
                            keep=gr.update(choices=labels, value=labels, visible=bool(labels)))

    def on_send(self, value, editing: Any, keep: Any, conv: Conversation, regions: Any = None,
                request: gr.Request | None = None) -> Sent:
        """Send: a new question (``on_submit``), or, while a question is edited, that question asked again
        with the pictures kept and those in the box added. Returns ``on_submit``'s outputs and the edit bar's."""
        if editing is None:
            return Sent(**self.chat.on_submit(value, conv, request, regions)._asdict(), **_bar_as_is())
        kept = set(keep or [])
        turn = whole(editing, "turn")
        shown = branches.describe(conv)
        remove = numbers([label for label in (shown[turn]["images"] if 0 <= turn < len(shown) else [])
                          if label not in kept])
        lang = _lang(request)
        try:
            self.service.edit(conv, turn, message_text(value), message_files(value), remove)
        except UserError as exc:
            self.warn(_message(exc, lang), lang)
            return Sent(**self._asked(gr.skip(), conv, gr.skip(), lang)._asdict(), **_bar_as_is())
        self.saved.save(conv)
        # the box emptied, an empty notice and the answer to come, as ``on_submit`` returns them; the bar closes
        return Sent(**self._asked("", conv, "", lang, partial="")._asdict(), **_closed_bar(),
                    keep=gr.update(choices=[], value=[]))

    def on_cancel_edit(self) -> tuple:
        """Cancel: the box empties and the edit bar goes; nothing changed."""
        return "", None, gr.update(visible=False)

    def on_attach_box(self, value, editing: Any, conv: Conversation, frames: float | None = None,
                      pages: str | None = None, request: gr.Request | None = None, progress=gr.Progress()):
        """Files put in the question box join the strip at once (``on_attach``); while a question is edited
        they stay in the box and go with that question when it is sent."""
        if editing is not None:
            return skipped(Attached)
        return self.chat.on_attach(value, conv, frames, pages, request, progress)

    def chats_view(self, conv: Conversation | None, entries: list[dict[str, Any]] | None = None,
                   request: gr.Request | None = None) -> str:
        """The list of earlier chats as the page shows it (with the retention and size limits)."""
        if conv is None:  # no conversation yet: nothing of this browser to list, and no folder to show from
            return views.chats_html([], self.saved.limits(), lambda path: "", _lang(request))
        if entries is None:
            entries = self.saved.listing(conv)
        return views.chats_html(entries, self.saved.limits(), self.context.shown(conv), _lang(request))

    def on_list(self, conv: Conversation, request: gr.Request) -> str:
        """The list of earlier chats again (after an answer, New chat, an import, a page load)."""
        return self.chats_view(conv, request=request)

    def on_share_page(self, conv: Conversation, request: gr.Request) -> tuple:
        """Share: a read-only link to the branch shown (its full address, its expiry), and Revoke."""
        link = self.on_share(conv, _lang(request))
        if not link:
            return gr.skip(), gr.skip(), gr.skip()
        page = str(request.headers.get("referer") or "").split("#")[0].split("?")[0] if request else ""
        url = (page if page.endswith("/") else page + "/") + link["url"].lstrip("/") if page else link["url"]
        text = views.share_text(url, link["expires"], _lang(request))
        return text, gr.update(visible=True), link["token"]

    def on_revoke_page(self, token: str, conv: Conversation, request: gr.Request | None = None) -> tuple:
        """Revoke the link just made: it no longer opens."""
        if token and self.on_revoke(token, conv, _lang(request)):
            return localize(Message("share.revoked"), _lang(request)), gr.update(visible=False), ""
        return gr.skip(), gr.skip(), gr.skip()

