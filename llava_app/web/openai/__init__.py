"""The app's own OpenAI-compatible ``/v1`` endpoint (``endpoint``) and the checks of its requests
(``request``)."""
