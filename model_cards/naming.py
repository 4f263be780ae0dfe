"""How cards name a model or dataset: a Hub id when there is one, else a folder's name, never a local path.

A card is published; the absolute path of a folder on the converting machine means nothing to its readers and
leaks the machine's layout.
"""

from __future__ import annotations

import os
import re

# org/name with the Hub's characters; a path (absolute, ./, ../, ~) never matches.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def looks_like_hub_id(text: str | None) -> bool:
    """A Hub repo id (``org/name`` or a bare canonical name), not a local path."""
    if not text or text.startswith((".", "/", "~")) or os.path.isabs(text):
        return False
    return bool(_HUB_ID.match(text)) and not os.path.isdir(text)


def hub_id(source: str, name_or_path: str | None = None, given: str | None = None) -> str | None:
    """The Hub id to record as ``base_model``: ``given``, else ``source`` if it is one, else the config's
    ``_name_or_path`` when a local copy remembers where it came from."""
    for candidate in (given, source, name_or_path):
        if looks_like_hub_id(candidate):
            return candidate
    return None


def public_name(source: str, hub: str | None = None) -> str:
    """What a card may print for ``source``: its Hub id, else the folder's last path component."""
    if hub:
        return hub
    if looks_like_hub_id(source):
        return source
    return os.path.basename(os.path.normpath(source)) or "a local folder"
