"""The chat layer: conversations, context fitting, the service, sessions. Imports neither gradio nor torch."""
