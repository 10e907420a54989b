"""What each event of the page and the API does: the conversation's events (``chat``), edits, branches
and earlier chats (``branches``), what belongs to a visitor (``session``, ``switch_policy``); what the
events send (``inputs``) and what the page shows (``views``, ``markdown``)."""
