"""User-facing errors: raised anywhere, caught once (UI/API), shown as a message, never a traceback."""


class UserError(Exception):
    """Something the user (or operator) can fix; its message is shown as is."""


class ModelNotFoundError(UserError):
    """A model id or folder that cannot be loaded (offline, not cached, wrong id)."""


class ConfigError(UserError):
    """A setting that cannot work here (a device that is not there, 4-bit without CUDA, an unknown backend)."""


class MissingDependency(UserError):
    """A package the chosen setting needs is not installed; the message says what to install."""


class EngineError(Exception):
    """The model failed on a request (not the user's doing); the message says so in one line."""
