"""The composition root: every part of the app is built here, once, from the config.

``create_app(config)`` makes the image store, the chat engine, the service, the saved
conversations, the feedback log and the housekeeping thread, and hands them over as one
``App``. The web layer's ``build_demo(app)`` only lays out the page and wires its events;
``app.py`` launches it. No gradio here, and no torch: the engine imports that lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llava_app.chat.context import ContextFitter
from llava_app.chat.conversation import Conversation
from llava_app.chat.saved import BrowserSaves
from llava_app.chat.service import ChatService
from llava_app.chat.sessions import Janitor
from llava_app.chat.sharing import ShareLinks
from llava_app.chat.transfer import export_conversation, import_conversation
from llava_app.chat.uploads import Intake
from llava_app.config import Config
from llava_app.engine import make_app_backend
from llava_app.engine.base import Backend
from llava_app.engine.catalog import allowed_models
from llava_app.errors import UserError
from llava_app.storage.export import new_export_folder
from llava_app.storage.feedback import FeedbackLog
from llava_app.storage.fetch import FetchPolicy
from llava_app.storage.images import ImageLimits, ImageStore
from llava_app.storage.media import MediaOptions
from llava_app.storage.saved import SavedConversations
from llava_app.storage.shares import Shares
from llava_app.storage.shown import ShownPictures
from llava_app.storage.video import VideoLimits

EXPORT_KINDS = ("markdown", "json", "zip")
#: a conversation's shown pictures stay at least this long after they were last drawn
SHOWN_MIN_AGE_S = 3600.0


@dataclass
class App:
    """The app's parts, built once: what the page and the API work with."""

    config: Config
    service: ChatService
    #: this server's saved conversations, each under its browser's key (disabled with --no-history)
    saved: BrowserSaves
    #: likes and dislikes (None without --feedback-file)
    feedback: FeedbackLog | None
    #: where uploads are stored (never served: the page is given ``shown``'s links to them)
    image_root: Path
    exports_dir: Path
    #: the pictures as the page is given them, under one unguessable folder per conversation
    shown: ShownPictures
    #: read-only snapshots at unguessable URLs (off without --share-links)
    share_links: ShareLinks | None = None
    _janitor: Janitor | None = field(default=None, repr=False)
    #: the engine was made here (not handed in): ``close`` closes it too (its model process ends)
    owns_backend: bool = field(default=False, repr=False)

    # ----- one conversation replaces another (New chat, import, the API's /reset) --------------
    def replace(self, old: Conversation, new: Conversation, client: str | None = None) -> Conversation:
        """End ``old`` and put ``new`` in its place: same browser entry, same tab or API client."""
        self.saved.rebind(old, new)
        self.service.forget(old)
        self.service.touch(new, client=client)
        self.saved.save(new)
        return new

    def reopen(self, old: Conversation, row: str, client: str | None = None) -> tuple[Conversation, str | None]:
        """An earlier chat of this browser (``row`` of its list) in place of ``old``, which stays in the list;
        returns it and a question that was never answered (for the question box)."""
        if self.service.is_running(old):
            raise UserError("app.stop_before_open")
        self.saved.save(old)
        conv, pending = self.saved.reopen(old, row)
        self.service.forget(old)
        self.service.touch(conv, client=client)
        return conv, pending

    def import_file(self, path: str, old: Conversation, client: str | None = None
                    ) -> tuple[Conversation, str | None]:
        """A conversation from an exported JSON or zip, in place of ``old``; returns it and its system prompt."""
        if self.service.is_running(old):
            raise UserError("app.stop_before_import")
        imported = import_conversation(path, self.service.store, limits=self.service.upload_limits(),
                                       max_images=self.config.max_images)
        return self.replace(old, imported.conversation, client), imported.system_prompt

    def export(self, kind: str, conv: Conversation, system_prompt: str) -> Path:
        """Write one export (``EXPORT_KINDS``) into a fresh folder (a readable file name for the download)."""
        if not conv.turns and not conv.images:
            raise UserError("app.nothing_to_export")
        return export_conversation(kind, conv, new_export_folder(self.exports_dir), model=self.service.model_name,
                                   system_prompt=system_prompt, pointed=self.service.record_regions)

    # ----- background work ------------------------------------------------------------------
    def shown_path(self, conv: Conversation, source: str) -> str:
        """The path the page is given for a picture file of ``conv`` (its store file or saved copy)."""
        return self.shown.path(conv.view_key, source)

    def housekeep(self) -> None:
        """End idle conversations, delete image files none uses, sweep saved ones (the janitor calls this)."""
        self.service.housekeep()
        self.saved.housekeep()
        self.shown.sweep(max(2 * self.service.sessions.ttl_s, SHOWN_MIN_AGE_S))
        if self.share_links is not None:
            self.share_links.housekeep()

    def start_housekeeping(self, interval_s: float | None = None) -> None:
        """Run ``housekeep`` in a daemon thread, every ``interval_s`` (default: half the time-to-live)."""
        if self._janitor is None:
            ttl = self.service.sessions.ttl_s
            self._janitor = Janitor(self, "housekeep", interval_s or max(0.5, min(60.0, ttl / 2)))

    def close(self) -> None:
        """Stop background work; close the engine if it was made here (one handed in stays: a test may share it)."""
        if self._janitor is not None:
            self._janitor.stop()
            self._janitor = None
        if self.owns_backend:
            self.owns_backend = False
            self.service.backend.close()


def open_saved(config: Config) -> SavedConversations | None:
    """The store of saved conversations the config asks for (None with --no-history)."""
    if not config.history:
        return None
    root = os.path.join(config.data_dir, "history")
    return SavedConversations(config.history_db or os.path.join(root, "conversations.sqlite3"),
                              config.history_dir or os.path.join(root, "images"),
                              retention_s=config.history_days * 86400,
                              max_bytes=int(config.history_max_mb * 1024 * 1024))


def open_shares(config: Config) -> Shares | None:
    """The store of shared snapshots (None unless --share-links)."""
    if not config.share_links:
        return None
    root = os.path.join(config.data_dir, "shares")
    return Shares(os.path.join(root, "shares.sqlite3"), os.path.join(root, "images"),
                  ttl_s=config.share_link_days * 86400)


def url_policy(config: Config) -> FetchPolicy:
    """How URLs are fetched (for /chat's urls and /v1's image URLs): allowed hosts, the upload and time limits."""
    return FetchPolicy.from_list(config.image_url_allow, timeout_s=config.image_url_timeout,
                                 max_bytes=config.max_upload_bytes)


def media_intake(config: Config, store: ImageStore) -> Intake:
    """How uploads and URLs become pictures: video limits, keyframes, and URLs only with --image-urls."""
    video = VideoLimits(max_bytes=config.max_upload_bytes, max_seconds=config.max_video_seconds)
    return Intake(store, video_limits=video, url_policy=url_policy(config) if config.image_urls else None,
                  options=MediaOptions(frames=config.video_frames))


def create_app(config: Config, backend: Backend | None = None, store: ImageStore | None = None) -> App:
    """Build every part of the app from ``config``; ``backend``/``store`` may be given (tests share a model).

    Example:
        >>> app = create_app(parse_config(["--model", "tiny-random"]))  # doctest: +SKIP
        >>> build_demo(app).queue(**queue_kwargs(app.config)).launch(**launch_kwargs(app))  # doctest: +SKIP
    """
    store = store or ImageStore(os.path.join(config.data_dir, "images"))
    owns_backend = backend is None
    backend = backend or make_app_backend(config, store)
    service = ChatService(
        backend, store, max_images=config.max_images, max_question_chars=config.max_question_chars,
        image_limits=ImageLimits(max_bytes=config.max_upload_bytes),
        context=ContextFitter(backend, summarize=config.summarize_dropped, answer_tokens=config.max_new_tokens),
        max_images_per_message=config.max_images_per_message, session_ttl=config.session_ttl,
        max_new_tokens_limit=config.max_new_tokens_limit, allowed_models=allowed_models(config),
        intake=media_intake(config, store), queue_size=config.queue_size, grounding=config.grounding,
    )
    saved = BrowserSaves(open_saved(config), store)
    service.on_release.append(saved.release)
    feedback = FeedbackLog(config.feedback_file, with_images=config.feedback_images) if config.feedback_file else None
    app = App(config, service, saved, feedback, image_root=Path(store.root),
              exports_dir=Path(config.data_dir) / "exports", shown=ShownPictures(Path(config.data_dir) / "shown"),
              share_links=ShareLinks(open_shares(config), saved),
              owns_backend=owns_backend)
    app.start_housekeeping()
    return app
