"""The API's endpoints on the page's server: /chat, /context, /reset, /edit, /branch, /share, /revoke,
/conversations and /open (``page.api`` wires them to hidden components).

An API client has no browser key: its conversations are listed under its session. Answers are
streamed with the operator's settings; every failure reaches the client as a message
(``context.page_message``), never a dead stream or a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import gradio as gr

from llava_app.chat.conversation import Conversation
from llava_app.chat.regions import read_regions
from llava_app.errors import UserError
from llava_app.messages import Joined
from llava_app.web.cancellable import iterate_in_thread
from llava_app.web.handlers.context import HandlerContext, page_message
from llava_app.web.handlers.inputs import file_paths, numbers, url_list, whole


class ApiHandlers:
    """One method per API endpoint, over the app's parts."""

    def __init__(self, context: HandlerContext):
        self.app = context.app
        self.service = context.service
        self.saved = context.saved
        self.config = context.config
        self._remember_loop = context.remember_loop

    async def api_chat(self, message: str, images, urls, regions, conv: Conversation, request: gr.Request
                       ) -> AsyncIterator[tuple[str, Conversation]]:
        """Add the given images, videos, PDFs and URLs (may be none) to this client's conversation, ask (with the
        ``regions`` marked on its pictures: ``{"image": 2, "box": [x1, y1, x2, y2]}``), stream the answer."""
        self._remember_loop()
        try:
            self._api_client(conv, request)
            files, links, marked = file_paths(images), url_list(urls), read_regions(regions)
            # Decoding videos and PDFs and fetching URLs take a while: never on the event loop.
            result = await anyio.to_thread.run_sync(
                partial(self.service.attach, conv, files, links, all_or_nothing=True))
            if result.errors:
                raise UserError(Joined(result.errors))
            # off the event loop: a question right after a cancelled one waits for that answer to stop
            await anyio.to_thread.run_sync(partial(self.service.ask, conv, message, marked))
            async for text in self.api_stream(conv):
                yield text, conv
        except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dead stream
            raise gr.Error(page_message(exc), print_exception=False) from None

    def api_context(self, conv: Conversation) -> dict:
        """Image labels and count, prompt token count, the rendered prompt, the turns."""
        return conv.summary()

    def api_regions(self, turn, conv: Conversation) -> list[dict[str, Any]]:
        """What the answer of turn ``turn`` (0-based; -1 the newest) points at: ``{"image": "Image 2", "label",
        "box": [x1, y1, x2, y2]}`` (or ``"point"``) in the picture's pixels; ``"image": None`` when unclear."""
        try:
            number = -1 if turn is None or turn == "" else whole(turn, "turn")
            return [region.as_dict() for region in self.service.regions(conv, number)]
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None

    def api_reset(self, conv: Conversation, request: gr.Request) -> Conversation:
        """Start a new conversation."""
        return self.app.replace(conv, Conversation(), request.session_hash)

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
            edit = partial(self.service.edit, conv, whole(turn, "turn"), message, file_paths(images),
                           numbers(remove))
            await anyio.to_thread.run_sync(edit)  # new pictures are decoded off the event loop
            async for text in self.api_stream(conv):
                yield text, conv
        except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dead stream
            raise gr.Error(page_message(exc), print_exception=False) from None

    def api_branch(self, turn, index, conv: Conversation, request: gr.Request) -> tuple[dict, Conversation]:
        """Show version ``index`` (0-based) of turn ``turn``; returns ``/context``'s description."""
        try:
            self._api_client(conv, request)
            self.service.switch_branch(conv, whole(turn, "turn"), whole(index, "index"))
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None
        self.saved.save(conv)
        return conv.summary(), conv

    def api_share(self, conv: Conversation, request: gr.Request) -> dict[str, Any]:
        """Share the branch shown: ``{"url": "/share/<token>", "token", "expires"}`` (with --share-links)."""
        self._api_client(conv, request)
        try:
            token, expires = self.app.share_links.share(conv, self.service.model_name)
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None
        return {"url": f"/share/{token}", "token": token, "expires": expires}

    def api_revoke(self, link: str, conv: Conversation, request: gr.Request) -> bool:
        """Revoke a link this client made (the token or the URL)."""
        self._api_client(conv, request)
        try:
            self.app.share_links.revoke(conv, str(link or ""))
        except UserError as exc:
            raise gr.Error(page_message(exc), print_exception=False) from None
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
            raise gr.Error(page_message(exc), print_exception=False) from None
        return opened.summary(), opened
