# SPDX-License-Identifier: BSD-3-Clause
"""Names the system answers from its hosts file: resolved directly, not on the scheduler's resolver.

A name such as ``localhost`` that the C library finds in ``/etc/hosts`` costs a file read, never a
network round trip, when the name service switch consults ``files`` first (glibc's
``nsswitch.conf``: the first source that finds the name answers). Sending it to the scheduler's
resolver instead costs a hand-off to a thread and back (gevent's default resolver runs
``getaddrinfo`` in its thread pool): on an idle virtual machine each wake-up of the other thread
costs about as much as the local connect itself (``bench/connect.py``). Such names are resolved
with the C library's own ``getaddrinfo``, which libpq would have called; every other name still
goes through the scheduler's resolver.

Where the order cannot be known (no ``nsswitch.conf``: glibc then asks DNS first; musl has none
and reads the file first, but saying so needs the C library's name), nothing is short-cut.
"""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["answered_locally", "is_address"]

HOSTS = Path("/etc/hosts")
NSSWITCH = Path("/etc/nsswitch.conf")

_key: tuple[int, ...] | None = None
_names: frozenset[str] = frozenset()


def answered_locally(host: str) -> bool:
    """Whether the C library resolves ``host`` from the hosts file, without asking a server.

    Two ``stat()`` calls per connect notice an edited file; the files are read again only then.
    """
    global _key, _names  # noqa: PLW0603 (a cache of two files, for the whole process)
    try:
        hosts, nss = HOSTS.stat(), NSSWITCH.stat()
    except OSError:
        return False
    key = (hosts.st_ino, hosts.st_mtime_ns, hosts.st_size, nss.st_ino, nss.st_mtime_ns, nss.st_size)
    if key != _key:
        _names = _read() if _files_first() else frozenset()
        _key = key
    # Host names are case-insensitive (RFC 4343), and glibc's files backend compares them so.
    return host.lower() in _names


def _files_first() -> bool:
    """Whether the ``hosts:`` line of ``nsswitch.conf`` starts with the ``files`` source."""
    try:
        with NSSWITCH.open(encoding="utf-8", errors="replace") as lines:
            for raw in lines:
                line = raw.partition("#")[0].split()
                if line and line[0] == "hosts:":
                    return len(line) > 1 and line[1] == "files"
    except OSError:
        pass
    return False


def _read() -> frozenset[str]:
    """Every name (canonical names and aliases) with an address in the hosts file."""
    names: set[str] = set()
    try:
        with HOSTS.open(encoding="utf-8", errors="replace") as lines:
            for raw in lines:
                fields = raw.partition("#")[0].split()
                # An address, then its names; glibc skips a line whose address it cannot
                # parse, and would then ask the next source (DNS) for those names.
                if len(fields) >= 2 and is_address(fields[0]):
                    names.update(name.lower() for name in fields[1:])
    except OSError:
        return frozenset()
    return frozenset(names)


def is_address(text: str) -> bool:
    """Whether ``text`` is a numeric IPv4 or IPv6 address (with an optional ``%zone``)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text.partition("%")[0])  # "%": an IPv6 zone
        except (OSError, ValueError):
            continue
        return True
    return False
