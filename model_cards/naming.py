"""How cards name a model or dataset: a Hub id when there is one, else a folder's name, never a local path.

A card is published; the absolute path of a folder on the converting machine means nothing to its readers and
leaks the machine's layout.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# org/name with the Hub's characters; a path (absolute, ./, ../, ~) never matches.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def looks_like_hub_id(text: str | None) -> bool:
    """A Hub repo id (``org/name`` or a bare canonical name), not a local path."""
    if not text or text.startswith((".", "/", "~")) or os.path.isabs(text):
        return False
    return bool(_HUB_ID.match(text)) and not os.path.isdir(text)


def recorded_name_or_path(folder: str) -> str | None:
    """The ``_name_or_path`` a local copy's config.json recorded (`from_pretrained` replaces it with the folder)."""
    try:
        value = json.loads((Path(folder) / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def hub_id(source: str, given: str | None = None) -> str | None:
    """The Hub id to record as ``base_model``: ``given``, else ``source`` if it is one, else the ``_name_or_path``
    that a local copy's config.json recorded."""
    recorded = recorded_name_or_path(source) if os.path.isdir(source) else None
    for candidate in (given, source, recorded):
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


def family_of(config) -> str:
    """The student family a card names: the config's own ``family`` (VMamba, VideoMamba), else ViM or PlainMamba."""
    return getattr(config, "family", None) or ("ViM" if config.use_cls_token else "PlainMamba")
