"""The handlers for edits, branches and earlier chats: page events and API endpoints.

``ChatHandlers`` (handlers.py) takes these methods in as a base class; they use its
``app``/``service``/``saved``, its ``views`` and its error messages. Page handlers return
the conversation and what the page shows of it; API handlers stream text or return JSON.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import gradio as gr

from llava_app.chat import branches
from llava_app.chat.conversation import Conversation
from llava_app.errors import UserError
from llava_app.messages import Message
from llava_app.web import views
from llava_app.web.streaming import iterate_in_thread
from llava_app.web.translations import localize

log = logging.getLogger(__name__)


def numbers(value: Any) -> list[int]:
    """Image numbers from the API's ``remove`` (numbers, or labels such as "Image 2")."""
    items = value if isinstance(value, list) else ([] if value in (None, "") else [value])
    out = []
    for item in items:
        text = str(item).strip()
        text = text[len("Image "):] if text.startswith("Image ") else text
        if not text.isdigit():
            raise UserError("api.remove_numbers")
        out.append(int(text))
    return out


def whole(value: Any, what: str) -> int:
    """A 0-based index given by a client."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError("api.whole_number", what=what) from None


def _message(exc: BaseException, lang: str = "en") -> str:
    from llava_app.web.handlers import page_message  # handlers.py imports this module

    return page_message(exc, lang)


def _lang(request: Any) -> str:
    from llava_app.web.handlers import language

    return language(request)


def _files(value: Any) -> list[tuple[str, str]]:
    from llava_app.web.inputs import file_paths

    return file_paths(value)


#: the chat's and the list's links (``views.turn_tools``, ``views.chats_html``), as page.js passes them on
ACTION = re.compile(r"^(?:(?P<verb>edit)-(?P<turn>\d+)|branch-(?P<bturn>\d+)-(?P<index>\d+)|"
                    r"(?P<chat>open|rename|delete)-(?P<row>[A-Za-z0-9_-]+)(?::(?P<title>.*))?)$", re.S)
SKIP_ACTION = 13  # outputs of ``on_action``: state, gallery, question, notice, list, 4 of the edit bar, 4 views


def _closed_bar() -> tuple:
    return None, gr.update(visible=False), gr.skip(), gr.skip()


class BranchingHandlers:
    """Edit, Regenerate-as-sibling, the "< 2/3 >" switch, the list of earlier chats; and their API."""

    app: Any
    service: Any
    saved: Any
    config: Any

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

    def on_branch(self, turn: Any, index: Any, conv: Conversation, system_prompt: str, lang: str = "en"):
        """Show version ``index`` (0-based) of turn ``turn``: the conversation, the gallery and the views."""
        try:
            self.service.switch_branch(conv, whole(turn, "turn"), whole(index, "index"))
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return conv, views.gallery_value(conv), *self.views(conv, lang=lang)
        conv.set_prompt(self.service.preview(conv, system_prompt) if conv.turns else None)
        self.saved.save(conv)
        return conv, views.gallery_value(conv), *self.views(conv, lang=lang)

    def on_chats(self, conv: Conversation) -> list[dict[str, Any]]:
        """This browser's saved conversations, newest first (see ``BrowserSaves.listing``)."""
        return self.saved.listing(conv)

    def on_open(self, row: str, conv: Conversation, request: gr.Request, lang: str = "en"):
        """An earlier chat in place of this one (which stays in the list): the conversation, the gallery,
        the question box (a question never answered goes back in it) and the views."""
        try:
            opened, pending = self.app.reopen(conv, str(row or ""), request.session_hash)
        except UserError as exc:
            gr.Warning(_message(exc, lang))
            return conv, views.gallery_value(conv), gr.update(), *self.views(conv, lang=lang)
        return (opened, views.gallery_value(opened), pending if pending is not None else "",
                *self.views(opened, lang=lang))

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
            shown = self.on_branch(match["bturn"], match["index"], conv, system_prompt, lang)
            out[0], out[1], out[9:] = shown[0], shown[1], shown[2:]
            out[4], out[5:9] = self.chats_view(conv, request=request), _closed_bar()  # the title follows the branch
            return tuple(out)
        row = match["row"]
        if match["chat"] == "open":
            opened = self.on_open(row, conv, request, lang)
            out[0], out[1], out[2], out[9:] = opened[0], opened[1], opened[2], opened[3:]
            out[4], out[5:9] = self.chats_view(opened[0], request=request), _closed_bar()
        elif match["chat"] == "rename":
            out[4] = self.chats_view(conv, self.on_rename(row, match["title"] or "", conv, lang), request)
        else:
            out[4] = self.chats_view(conv, self.on_delete_chat(row, conv, lang), request)
        return tuple(out)

    def _start_edit(self, turn: int, conv: Conversation, out: list, lang: str) -> tuple:
        """The question of ``turn`` goes in the box, and the edit bar says so and lists its pictures."""
        with conv.lock:
            answered = 0 <= turn < len(conv.turns) and conv.turns[-1].assistant is not None
            question = conv.turns[turn] if answered else None
            labels = branches.describe(conv)[turn]["images"] if answered else []
        if question is None or self.service.is_running(conv):
            self.warn(Message("edit.wait"), lang)
            return tuple(out)
        title = Message("edit.bar_ticked" if labels else "edit.bar_attached", number=turn + 1)
        out[2] = {"text": question.user, "files": []}
        out[5:9] = [turn, gr.update(visible=True), localize(title, lang),
                    gr.update(choices=labels, value=labels, visible=bool(labels))]
        return tuple(out)

    def on_send(self, value, editing: Any, keep: Any, conv: Conversation, request: gr.Request | None = None):
        """Send: a new question (``on_submit``), or, while a question is edited, that question asked again
        with the pictures kept and those in the box added. Returns ``on_submit``'s outputs and the edit bar's."""
        if editing is None:
            return *self.on_submit(value, conv, request), gr.skip(), gr.skip(), gr.skip()
        from llava_app.web.inputs import message_files, message_text

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
        return self.on_attach(value, conv, frames, pages, request, progress)

    def chats_view(self, conv: Conversation | None, entries: list[dict[str, Any]] | None = None,
                   request: gr.Request | None = None) -> str:
        """The list of earlier chats as the page shows it (with the retention and size limits)."""
        if entries is None:
            entries = self.saved.listing(conv) if conv is not None else []
        return views.chats_html(entries, self.saved.limits(), _lang(request))

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

    # ----- the API ----------------------------------------------------------------------------
    def _api_client(self, conv: Conversation, request: gr.Request) -> None:
        """An API client's conversations are listed under its session (it has no browser key)."""
        self.service.touch(conv, client=request.session_hash)
        self.saved.bind_client(conv, request.session_hash, request.username)

    async def api_stream(self, conv: Conversation) -> AsyncIterator[str]:
        """The pending turn's answer, streamed, saved when it ends (the API's /chat and /edit)."""
        self._remember_loop()
        params = self.service.params(self.config.temperature, self.config.top_p, self.config.max_new_tokens)
        text = ""
        async for text in iterate_in_thread(
                lambda: self.saved.saving(self.service.stream_answer(conv, params, self.config.system_prompt), conv),
                on_cancel=lambda: self.service.stop(conv)):
            yield text
        yield text

    async def api_edit(self, turn, message: str, images, remove, conv: Conversation, request: gr.Request
                       ) -> AsyncIterator[tuple[str, Conversation]]:
        """Ask turn ``turn`` (0-based) again with ``message``, ``images`` added and ``remove`` (numbers or labels)
        taken off it; stream the new answer. What followed stays on its own branch."""
        try:
            self._api_client(conv, request)
            edit = partial(self.service.edit, conv, whole(turn, "turn"), message, _files(images),
                           numbers(remove))
            await anyio.to_thread.run_sync(edit)  # new pictures are decoded off the event loop
            async for text in self.api_stream(conv):
                yield text, conv
        except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dead stream
            raise gr.Error(_message(exc), print_exception=False) from None

    def api_branch(self, turn, index, conv: Conversation, request: gr.Request) -> tuple[dict, Conversation]:
        """Show version ``index`` (0-based) of turn ``turn``; returns ``/context``'s description."""
        try:
            self._api_client(conv, request)
            self.service.switch_branch(conv, whole(turn, "turn"), whole(index, "index"))
        except UserError as exc:
            raise gr.Error(_message(exc), print_exception=False) from None
        self.saved.save(conv)
        return conv.summary(), conv

    def api_share(self, conv: Conversation, request: gr.Request) -> dict[str, Any]:
        """Share the branch shown: ``{"url": "/share/<token>", "token", "expires"}`` (with --share-links)."""
        self._api_client(conv, request)
        try:
            token, expires = self.app.share_links.share(conv, self.service.model_name)
        except UserError as exc:
            raise gr.Error(_message(exc), print_exception=False) from None
        return {"url": f"/share/{token}", "token": token, "expires": expires}

    def api_revoke(self, link: str, conv: Conversation, request: gr.Request) -> bool:
        """Revoke a link this client made (the token or the URL)."""
        self._api_client(conv, request)
        try:
            self.app.share_links.revoke(conv, str(link or ""))
        except UserError as exc:
            raise gr.Error(_message(exc), print_exception=False) from None
        return True

    def api_conversations(self, conv: Conversation, request: gr.Request) -> list[dict[str, Any]]:
        """This client's saved conversations, newest first: id, title, updated, turns, images, thumbnails."""
        self._api_client(conv, request)
        return [{k: v for k, v in entry.items() if k != "thumbnails"} for entry in self.saved.listing(conv)]

    def api_open(self, row: str, conv: Conversation, request: gr.Request) -> tuple[dict, Conversation]:
        """Open saved conversation ``row`` in place of this one; returns ``/context``'s description."""
        try:
            self._api_client(conv, request)
            opened, _ = self.app.reopen(conv, str(row or ""), request.session_hash)
        except UserError as exc:
            raise gr.Error(_message(exc), print_exception=False) from None
        return opened.summary(), opened
