"""User-facing errors: raised anywhere, caught once (UI/API), shown as a message, never a traceback."""


class UserError(Exception):
    """Something the user (or operator) can fix; its message is shown as is."""


class ModelNotFoundError(UserError):
    """A model id or folder that cannot be loaded (offline, not cached, wrong id)."""

