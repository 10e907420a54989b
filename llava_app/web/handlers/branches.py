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
from llava_app.web.handlers import views
from llava_app.web.handlers.chat import ChatHandlers
from llava_app.web.handlers.context import HandlerContext
from llava_app.web.handlers.context import language as _lang
from llava_app.web.handlers.context import page_message as _message
from llava_app.web.handlers.inputs import file_paths as _files
from llava_app.web.handlers.inputs import message_files, message_text, numbers, whole
from llava_app.web.translations import localize

#: the chat's and the list's links (``views.turn_tools``, ``views.chats_html``), as page.js passes them on
ACTION = re.compile(r"^(?:(?P<verb>edit)-(?P<turn>\d+)|branch-(?P<bturn>\d+)-(?P<index>\d+)|"
                    r"(?P<chat>open|rename|delete)-(?P<row>[A-Za-z0-9_-]+)(?::(?P<title>.*))?)$", re.S)
SKIP_ACTION = 13  # outputs of ``on_action``: state, gallery, question, notice, list, 4 of the edit bar, 4 views


def _closed_bar() -> tuple:
    return None, gr.update(visible=False), gr.skip(), gr.skip()


class BranchHandlers:
    """Edit, the "< 2/3 >" switch, the list of earlier chats, Share (Regenerate-as-sibling is ``ChatHandlers``')."""

    def __init__(self, context: HandlerContext, chat: ChatHandlers):
        self.app = context.app
        self.service = context.service
        self.saved = context.saved
        self.chat = chat  # a new question (``on_submit``) and files put in the box (``on_attach``)
        # the shared helpers, under the names these handlers call them by
        self.views, self.warn, self.limits_text, self._images = (context.views, context.warn, context.limits_text,
                                                                 context.images)

    # ----- page events ------------------------------------------------------------------------
    def on_edit(self, turn: Any, text: str, files: Any, remove: Any, conv: Conversation):
        """Turn ``turn`` (0-based) asked again with ``text``, the pictures in ``files`` added and the image
        numbers in ``remove`` taken off it; ``on_generate`` then writes the answer. Returns the conversation,
        the gallery, the chat (with an empty answer to come), the prompt, its stats and the meter."""
        try:
            self.service.edit(conv, whole(turn, "turn"), text, _files(files), numbers(remove))
        except UserError as exc:
            gr.Warning(_message(exc))
            return conv, views.gallery_value(conv), *self.views(conv)
        self.saved.save(conv)
        return conv, views.gallery_value(conv), *self.views(conv, partial="")

    def on_branch(self, turn: Any, index: Any, conv: Conversation, system_prompt: str):
        """Show version ``index`` (0-based) of turn ``turn``: the conversation, the gallery and the views."""
        try:
            self.service.switch_branch(conv, whole(turn, "turn"), whole(index, "index"))
        except UserError as exc:
            gr.Warning(_message(exc))
            return conv, views.gallery_value(conv), *self.views(conv)
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        return conv, views.gallery_value(conv), *self.views(conv)

    def on_chats(self, conv: Conversation) -> list[dict[str, Any]]:
        """This browser's saved conversations, newest first (see ``BrowserSaves.listing``)."""
        return self.saved.listing(conv)

    def on_open(self, row: str, conv: Conversation, request: gr.Request):
        """An earlier chat in place of this one (which stays in the list): the conversation, the gallery,
        the question box (a question never answered goes back in it) and the views."""
        try:
            opened, pending = self.app.reopen(conv, str(row or ""), request.session_hash)
        except UserError as exc:
            gr.Warning(_message(exc))
            return conv, views.gallery_value(conv), gr.update(), *self.views(conv)
        return (opened, views.gallery_value(opened), pending if pending is not None else "",
                *self.views(opened))

    def on_rename(self, row: str, title: str, conv: Conversation) -> list[dict[str, Any]]:
        """Title an earlier chat; returns the list again."""
        try:
            self.saved.rename(conv, str(row or ""), str(title or ""))
        except UserError as exc:
            gr.Warning(_message(exc))
        return self.saved.listing(conv)

    def on_delete_chat(self, row: str, conv: Conversation) -> list[dict[str, Any]]:
        """Delete an earlier chat; returns the list again."""
        try:
            self.saved.delete(conv, str(row or ""))
        except UserError as exc:
            gr.Warning(_message(exc))
        return self.saved.listing(conv)

    def on_share(self, conv: Conversation) -> dict[str, Any]:
        """A read-only snapshot of the branch shown: ``{"url": "/share/<token>", "token", "expires"}`` (the
        page prefixes its own origin); ``{}`` with a message when there is nothing to share or sharing is off."""
        try:
            token, expires = self.app.share_links.share(conv, self.service.model_name)
        except UserError as exc:
            gr.Warning(_message(exc))
            return {}
        return {"url": f"/share/{token}", "token": token, "expires": expires}

    def on_revoke(self, link: str, conv: Conversation) -> bool:
        """Revoke one of this browser's links (the token or the whole URL); True when it is gone."""
        try:
            self.app.share_links.revoke(conv, str(link or ""))
        except UserError as exc:
            gr.Warning(_message(exc))
            return False
        return True

    # ----- the page's links, the edit bar, the list, Share ---------------------------------------
    def on_action(self, action: str, conv: Conversation, system_prompt: str, request: gr.Request):
        """A link of the chat or of the list, clicked: "edit-2", "branch-1-0", "open-<id>", "rename-<id>:<title>",
        "delete-<id>". Returns the conversation, the strip, the question box, the notice, the list, the edit
        bar (turn, shown, title, pictures) and the views; what an action leaves alone is skipped."""
        match = ACTION.match(str(action or ""))
        out = [gr.skip()] * SKIP_ACTION
        if match is None:
            return tuple(out)
        lang = _lang(request)
        if match["verb"]:
            return self._start_edit(int(match["turn"]), conv, out, lang)
        if match["bturn"] is not None:
            shown = self.on_branch(match["bturn"], match["index"], conv, system_prompt)
            out[0], out[1], out[9:] = shown[0], shown[1], shown[2:]
            out[4], out[5:9] = self.chats_view(conv, request=request), _closed_bar()  # the title follows the branch
            return tuple(out)
        row = match["row"]
        if match["chat"] == "open":
            opened = self.on_open(row, conv, request)
            out[0], out[1], out[2], out[9:] = opened[0], opened[1], opened[2], opened[3:]
            out[4], out[5:9] = self.chats_view(opened[0], request=request), _closed_bar()
        elif match["chat"] == "rename":
            out[4] = self.chats_view(conv, self.on_rename(row, match["title"] or "", conv), request)
        else:
            out[4] = self.chats_view(conv, self.on_delete_chat(row, conv), request)
        return tuple(out)

    def _start_edit(self, turn: int, conv: Conversation, out: list, lang: str) -> tuple:
        """The question of ``turn`` goes in the box, and the edit bar says so and lists its pictures."""
        with conv.lock:
            answered = 0 <= turn < len(conv.turns) and conv.turns[-1].assistant is not None
            question = conv.turns[turn] if answered else None
            labels = branches.describe(conv)[turn]["images"] if answered else []
        if question is None or self.service.is_running(conv):
            self.warn(views.plain("Wait for the answer being written, or press Stop, before editing a question."), lang)
            return tuple(out)
        title = (f"**Editing question {turn + 1}**: Send asks it again, what followed stays on its own branch. "
                 + ("Ticked pictures stay with it; attached ones join it." if labels else
                    "Pictures attached now join it."))
        out[2] = {"text": question.user, "files": []}
        out[5:9] = [turn, gr.update(visible=True), localize(title, lang),
                    gr.update(choices=labels, value=labels, visible=bool(labels))]
        return tuple(out)

    def on_send(self, value, editing: Any, keep: Any, conv: Conversation, request: gr.Request | None = None):
        """Send: a new question (``on_submit``), or, while a question is edited, that question asked again
        with the pictures kept and those in the box added. Returns ``on_submit``'s outputs and the edit bar's."""
        if editing is None:
            return *self.chat.on_submit(value, conv, request), gr.skip(), gr.skip(), gr.skip()
        kept = set(keep or [])
        turn = whole(editing, "turn")
        shown = branches.describe(conv)
        remove = numbers([label for label in (shown[turn]["images"] if 0 <= turn < len(shown) else [])
                          if label not in kept])
        lang = _lang(request)
        try:
            self.service.edit(conv, turn, message_text(value), message_files(value), remove)
        except UserError as exc:
            self.warn(_message(exc), lang)
            return (gr.skip(), views.gallery_value(conv), conv, gr.skip(), self.limits_text(conv, lang),
                    *self.views(conv, lang=lang), gr.skip(), gr.skip(), gr.skip())
        self.saved.save(conv)
        # the strip, the conversation, an empty notice and the limits, as ``on_submit`` returns them
        return ("", *self._images(conv, "", lang)[:4], *self.views(conv, partial="", lang=lang),
                None, gr.update(visible=False), gr.update(choices=[], value=[]))

    def on_cancel_edit(self) -> tuple:
        """Cancel: the box empties and the edit bar goes; nothing changed."""
        return "", None, gr.update(visible=False)

    def on_attach_box(self, value, editing: Any, conv: Conversation, frames: float | None = None,
                      pages: str | None = None, request: gr.Request | None = None, progress=gr.Progress()):
        """Files put in the question box join the strip at once (``on_attach``); while a question is edited
        they stay in the box and go with that question when it is sent."""
        if editing is not None:
            return (gr.skip(),) * 6
        return self.chat.on_attach(value, conv, frames, pages, request, progress)

    def chats_view(self, conv: Conversation | None, entries: list[dict[str, Any]] | None = None,
                   request: gr.Request | None = None) -> str:
        """The list of earlier chats as the page shows it (with the retention and size limits)."""
        if entries is None:
            entries = self.saved.listing(conv) if conv is not None else []
        return localize(views.chats_html(entries, self.saved.limits()), _lang(request))

    def on_list(self, conv: Conversation, request: gr.Request) -> str:
        """The list of earlier chats again (after an answer, New chat, an import, a page load)."""
        return self.chats_view(conv, request=request)

    def on_share_page(self, conv: Conversation, request: gr.Request) -> tuple:
        """Share: a read-only link to the branch shown (its full address, its expiry), and Revoke."""
        link = self.on_share(conv)
        if not link:
            return gr.skip(), gr.skip(), gr.skip()
        page = str(request.headers.get("referer") or "").split("#")[0].split("?")[0] if request else ""
        url = (page if page.endswith("/") else page + "/") + link["url"].lstrip("/") if page else link["url"]
        text = localize(views.share_text(url, link["expires"]), _lang(request))
        return text, gr.update(visible=True), link["token"]

    def on_revoke_page(self, token: str, conv: Conversation, request: gr.Request | None = None) -> tuple:
        """Revoke the link just made: it no longer opens."""
        if token and self.on_revoke(token, conv):
            return localize("Link revoked: it no longer opens.", _lang(request)), gr.update(visible=False), ""
        return gr.skip(), gr.skip(), gr.skip()

