"""The page's controls for edits, branches, earlier chats and share links: layout and wiring.

The chat's own lines under each question ("✎ Edit", "‹ 2/3 ›") and the earlier-chats list are
links (``views.turn_tools``, ``views.chats_html``); page.js turns a click on one into a click
on the hidden ``#turn-action-go`` button, carrying the link's action ("edit-2", "branch-1-0",
"open-<id>", ...), which ``BranchHandlers.on_action`` carries out. Editing a question puts
its text in the question box and shows the edit bar above it (which pictures stay with the
question, Cancel); Send then asks it again, and what followed stays on its own branch.
"""

from __future__ import annotations

import gradio as gr

from llava_app.web.handlers import Handlers
from llava_app.web.handlers.outputs import Action
from llava_app.web.i18n import T
from llava_app.web.page.components import Chats, EditBar, Page

# The link clicked (page.js keeps it in ``window.llavaAction``) becomes the event's first input.
ACTION_JS = "(...args) => { args[0] = window.llavaAction || ''; window.llavaAction = ''; return args; }"


def edit_bar() -> EditBar:
    """The edit bar (hidden until a question's Edit is clicked); placed just above the question box."""
    editing = gr.State(None)
    with gr.Row(visible=False, elem_id="edit-bar", equal_height=True) as bar:
        title = gr.Markdown("", elem_id="edit-title", min_width=220)
        keep = gr.CheckboxGroup([], label=T("keep_images"), show_label=False, container=False, elem_id="edit-keep",
                                scale=0, min_width=160)
        cancel = gr.Button(T("cancel_edit"), size="sm", elem_id="cancel-edit", scale=0, min_width=90)
    return EditBar(editing, bar, title, keep, cancel)


def share_button(enabled: bool) -> gr.Button | None:
    """Share, in the row of actions: only with ``--share-links``."""
    return gr.Button(T("share"), elem_id="share", size="sm", scale=0, min_width=80) if enabled else None


def chats_panel(share: gr.Button | None) -> Chats:
    """Under Share: what Share made (the link, its expiry, Revoke); the hidden channel for the links."""
    info = revoke = link = None
    if share is not None:
        with gr.Row(elem_id="share-box", equal_height=True):
            info = gr.Markdown("", elem_id="share-info")
            revoke = gr.Button(T("revoke"), size="sm", elem_id="revoke", visible=False, scale=0, min_width=110)
        link = gr.State("")
    action = gr.Textbox("", visible="hidden", elem_id="turn-action")
    go = gr.Button("go", visible="hidden", elem_id="turn-action-go")
    return Chats(None, action, go, share, info, revoke, link)  # the list comes in the side panel


def chats_list(handlers: Handlers, chats: Chats) -> None:
    """The earlier chats, in the column of their own (on a phone: the drawer behind "☰ Chats")."""
    gr.Markdown(T("chats_heading"), elem_id="earlier-chats")
    chats.listing = gr.HTML(handlers.branches.chats_view(None), elem_id="chat-list", padding=False)


def wire(page: Page, handlers: Handlers) -> None:
    """The chat's links, the edit bar's Cancel, and the list's refreshes."""
    edit, chats = page.edit, page.chats
    chats.go.click(handlers.branches.on_action, [chats.action, page.state, page.system_prompt], page.outputs(Action),
                   js=ACTION_JS, api_visibility="private", show_progress="hidden")
    edit.cancel.click(handlers.branches.on_cancel_edit, None, [page.question, edit.editing, edit.bar],
                      api_visibility="private", queue=False, show_progress="hidden")
    if chats.share is not None:
        chats.share.click(handlers.branches.on_share_page, [page.state], [chats.share_info, chats.revoke, chats.link],
                          api_visibility="private", show_progress="hidden")
        chats.revoke.click(handlers.branches.on_revoke_page, [chats.link, page.state],
                           [chats.share_info, chats.revoke, chats.link], api_visibility="private",
                           show_progress="hidden")


def refresh_list(event, page: Page, handlers: Handlers) -> None:
    """After ``event``: the list of earlier chats again (a new title, a new date, a new entry)."""
    event.then(handlers.branches.on_list, [page.state], [page.chats.listing], api_visibility="private", queue=False,
               show_progress="hidden")


def close_edit(event, page: Page) -> None:
    """After ``event`` (New chat, import, a reload): no question is being edited any more."""
    event.then(lambda: (None, gr.update(visible=False)), None, [page.edit.editing, page.edit.bar],
               api_visibility="private", queue=False, show_progress="hidden")
