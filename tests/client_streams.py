"""gradio_client loses an answer that joined as its event stream was closing; the tests' clients keep it.

Gradio's server ends a session's event stream (``close_stream``) as soon as the session has no event left.
A client that asks again at once can have its question joined (the server answered the join) while its
reader has not yet read that ``close_stream``: the question is then filed under the closing stream, and when
the reader stops, gradio_client cancels it (``CancelledError``) although the server is answering it. Eight
clients asking one after another on two busy cores (``test_load``) met it about one run in ten. The page has
the same race in Gradio's JavaScript client, and ``page.js`` opens the stream again there; this does the same
for gradio_client in the test processes: a reader stopped by ``close_stream`` while an answer is still owed,
with no newer reader open, reads again. The server under test is not touched.
"""

from __future__ import annotations

from typing import Any


def owed(client: Any) -> bool:
    """Some event of ``client`` still waits for its answer: its messages are kept and none ends it."""
    return any(not any(m is None or (isinstance(m, dict) and m.get("msg") == "process_completed") for m in messages)
               for messages in list(client.pending_messages_per_event.values()))


def reading_again(read):
    """``Client.stream_messages`` that opens the stream again for an answer still owed when the server closed it."""

    def stream_messages(self, protocol, session_hash):
        while True:
            read(self, protocol, session_hash)
            with self.pending_lock:
                # open: the server stopped (every event told) or the connection broke; or a newer reader is open
                if self.stream_open or not owed(self):
                    return
                self.stream_open = True  # a question joined meanwhile: read its messages on a new stream

    stream_messages.reads_again = True
    return stream_messages


def keep_answers_joined_as_the_stream_closes() -> bool:
    """Install ``reading_again`` on gradio_client's ``Client``; False where its layout is not the one read here."""
    try:
        from gradio_client.client import Client
    except ImportError:
        return False
    read = getattr(Client, "stream_messages", None)
    if read is None or not hasattr(Client, "send_data"):
        return False
    if not getattr(read, "reads_again", False):
        Client.stream_messages = reading_again(read)
    return True
