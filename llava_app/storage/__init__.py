"""The storage layer: the image store, saved conversations, export/import, feedback."""
