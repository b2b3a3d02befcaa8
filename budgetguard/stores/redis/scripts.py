"""The Lua scripts, as sent to Redis: the generated ``FIELDS`` line, ``common.lua``, the script.

The ``.lua`` files live in ``lua/`` inside the package (found with
``importlib.resources``, so they ship in the wheel with the code).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .codec import FIELDS

__all__ = ["NAMES", "SOURCES", "fields_line", "register", "source"]

NAMES = ("reserve", "settle", "status", "reset", "define", "unreserve")


def fields_line() -> str:
    """The Lua declaration of ``codec.FIELDS``: the one list both sides read."""
    return "local FIELDS = {" + ", ".join(f"'{f}'" for f in FIELDS) + "}"


def source(name: str) -> str:
    """The full text of one script, ready for EVAL / SCRIPT LOAD."""
    lua = resources.files(__package__) / "lua"
    common = (lua / "common.lua").read_text(encoding="utf-8")
    body = (lua / f"{name}.lua").read_text(encoding="utf-8")
    return f"{fields_line()}\n{common}\n{body}"


SOURCES = {name: source(name) for name in NAMES}


def register(client: Any) -> dict[str, Any]:
    """The scripts registered on ``client`` (sent by EVALSHA, reloaded after NOSCRIPT)."""
    return {name: client.register_script(src) for name, src in SOURCES.items()} if client else {}
