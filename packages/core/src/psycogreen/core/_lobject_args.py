# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2's large-object arguments: modes, flags, and the conversions of its C parsing.

``mode`` strings are parsed and rebuilt as ``lobject_int.c`` does (``_lobject_parse_mode``,
``_lobject_unparse_mode``); the other arguments as psycopg2's ``PyArg_ParseTuple`` formats take
them (``"I"`` oids, ``"s"``/``"z"`` strings), with the same messages.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = [
    "INV_READ",
    "INV_WRITE",
    "LOBJECT_BINARY",
    "LOBJECT_READ",
    "LOBJECT_TEXT",
    "LOBJECT_WRITE",
    "optional_text",
    "parse_mode",
    "pgmode",
    "text",
    "type_name",
    "unparse_mode",
    "unsigned",
]

# libpq-fs.h
INV_WRITE = 0x20000
INV_READ = 0x40000
# psycopg2's lobject.h
LOBJECT_READ = 1
LOBJECT_WRITE = 2
LOBJECT_BINARY = 4
LOBJECT_TEXT = 8


def parse_mode(mode: str) -> int:
    """psycopg2's ``_lobject_parse_mode``: ``[r|w|rw|n][t|b]``, read and text by default.

    :raises ValueError: any other mode.
    """
    value = 0
    pos = 0
    if mode.startswith("rw"):
        value |= LOBJECT_READ | LOBJECT_WRITE
        pos = 2
    elif mode[:1] == "r":
        value |= LOBJECT_READ
        pos = 1
    elif mode[:1] == "w":
        value |= LOBJECT_WRITE
        pos = 1
    elif mode[:1] == "n":
        pos = 1
    else:
        value |= LOBJECT_READ
    if mode[pos : pos + 1] == "t":
        value |= LOBJECT_TEXT
        pos += 1
    elif mode[pos : pos + 1] == "b":
        value |= LOBJECT_BINARY
        pos += 1
    else:
        value |= LOBJECT_TEXT
    if pos != len(mode):
        message = f"bad mode for lobject: '{mode}'"
        raise ValueError(message)
    return value


def unparse_mode(mode: int) -> str:
    """psycopg2's ``_lobject_unparse_mode``: ``"rwt"``, ``"rb"``, ``"n"``..."""
    letters = ("r" if mode & LOBJECT_READ else "") + ("w" if mode & LOBJECT_WRITE else "")
    if not letters:
        return "n"
    return letters + ("t" if mode & LOBJECT_TEXT else "b")


def pgmode(mode: int) -> int:
    """The ``lo_open`` flags of a parsed mode (0: not to be opened)."""
    return (INV_READ if mode & LOBJECT_READ else 0) | (INV_WRITE if mode & LOBJECT_WRITE else 0)


def unsigned(value: Any) -> int:  # noqa: ANN401 (anything with __index__)
    """PyArg's ``"I"``: an int, converted without overflow checking (psycopg2's oids)."""
    return operator.index(value) & 0xFFFFFFFF


def text(value: object, position: int) -> str:
    """PyArg's ``"s"``: a str without NUL characters."""
    if not isinstance(value, str):
        message = f"argument {position} must be str, not {type_name(value)}"
        raise TypeError(message)
    if "\0" in value:
        raise ValueError("embedded null character")
    return value


def optional_text(value: object, position: int) -> str | None:
    """PyArg's ``"z"``: ``None``, or what ``"s"`` takes."""
    if value is None:
        return None
    if not isinstance(value, str):
        message = f"argument {position} must be str or None, not {type_name(value)}"
        raise TypeError(message)
    return text(value, position)


def type_name(value: object) -> str:
    """The name psycopg2's messages give the type of ``value``."""
    return type(value).__name__
