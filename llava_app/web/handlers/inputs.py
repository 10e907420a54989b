"""What the page and the API send, read: files from the strip and the question box, links, URL lists,
image numbers and 0-based indexes."""

from __future__ import annotations

import os
import re
from typing import Any

from llava_app.errors import UserError


def upload_files(value: Any) -> list[tuple[str, str]]:
    """Paths and names of newly uploaded gallery items (ours carry an "Image N" caption)."""
    files = []
    for item in value or []:
        path, caption = (item if isinstance(item, (tuple, list)) else (item, None))
        if caption and str(caption).startswith("Image "):
            continue
        files.append((str(path), os.path.basename(str(path))))
    return files


def message_text(value: Any) -> str:
    """The text of the question box (a ``MultimodalTextbox`` value, or plain text from older clients)."""
    return str(value.get("text") or "") if isinstance(value, dict) else str(value or "")


_ONLY_URLS = re.compile(r"^\s*(https?://\S+\s*)+$")


def pasted_urls(text: str) -> list[str]:
    """The URLs of a question box that holds nothing but links (pictures, videos or PDFs to fetch)."""
    return text.split() if _ONLY_URLS.match(text or "") else []


_URL = re.compile(r"https?://\S+")


def links_in(text: str) -> list[str]:
    """The http(s) links anywhere in a question ("what is in https://…/cat.png?"), without trailing punctuation."""
    return [url.rstrip(".,;:!?)]}'\"") for url in _URL.findall(text or "")]


def message_files(value: Any) -> list[tuple[str, str]]:
    """Paths and names of the files in the question box."""
    return file_paths(value.get("files") or []) if isinstance(value, dict) else []


def file_paths(value: Any) -> list[tuple[str, str]]:
    """Paths and names from a ``gr.File`` value (API uploads)."""
    items = value if isinstance(value, list) else ([value] if value else [])
    out = []
    for item in items:
        path = item if isinstance(item, str) else getattr(item, "name", None) or getattr(item, "path", None)
        if path:
            out.append((str(path), os.path.basename(str(path))))
    return out


def url_list(value: Any) -> list[str]:
    """URLs from the API's ``urls`` (a list of strings, or one string); anything else is refused."""
    if value in (None, "", []):
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
        raise UserError("api.urls")
    return [u.strip() for u in items if u.strip()]


def numbers(value: Any) -> list[int]:
    """Image numbers from the API's ``remove`` (numbers, or labels such as "Image 2")."""
    items = value if isinstance(value, list) else ([] if value in (None, "") else [value])
    out = []
    for item in items:
        text = str(item).strip()
        text = text[len("Image "):] if text.startswith("Image ") else text
        if not text.isdigit():
            raise UserError("api.remove_numbers")
        out.append(int(text))
    return out


def whole(value: Any, what: str) -> int:
    """A 0-based index given by a client."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError("api.whole_number", what=what) from None
