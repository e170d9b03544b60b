# SPDX-License-Identifier: BSD-3-Clause
"""How far a mode's process has got: counted by the child, shown by the parent.

The counters live in a small file that both processes map into memory. The child stores into
the map, which is a copy into memory: no system call, so it can neither block, nor switch to
another greenlet, nor interleave with another writer, whatever the scheduler. A write to a pipe
can do all three: eventlet's ``monkey_patch()`` greens ``os.write``, which then waits on the
hub before every write to a pipe, and two greenthreads writing at once make eventlet raise
"Second simultaneous write on fileno 1". The parent reads the map a few times a second.
"""

from __future__ import annotations

import mmap
import struct
import sys
import time
from pathlib import Path

#: The counters, in the order they are stored (signed 64-bit, little-endian).
FIELDS = ("connections", "queries")
_SLOT = struct.Struct("<q")
SIZE = _SLOT.size * len(FIELDS)
SPINNER = "|/-\\"


class Counters:
    """The shared counters, in a file made by the parent (``create=True``), opened by a child."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if create:
            path.write_bytes(bytes(SIZE))
        with path.open("r+b") as file:
            # The map keeps its own reference to the file: it stays valid once this is closed.
            self._map = mmap.mmap(file.fileno(), SIZE)

    def store(self, field: str, value: int) -> None:
        """Set one counter: a copy into shared memory, nothing that waits or yields."""
        _SLOT.pack_into(self._map, _SLOT.size * FIELDS.index(field), value)

    def read(self) -> dict[str, int]:
        """Every counter as last stored."""
        return {
            name: _SLOT.unpack_from(self._map, _SLOT.size * i)[0] for i, name in enumerate(FIELDS)
        }

    def close(self) -> None:
        self._map.close()


class ProgressLine:
    """One line per mode: redrawn in place on a terminal; elsewhere only its final state.

    Off a terminal (a pipe, a log) the output is what the terminal shows once the run is over.
    """

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.label = ""
        self.totals: dict[str, int] = {}
        self.frame = 0
        self.start = 0.0

    def begin(self, label: str, clients: int, queries: int) -> None:
        self.label, self.frame = label, 0
        self.totals = {"connections": clients, "queries": clients * queries}
        self.start = time.monotonic()
        self.update({"connections": 0, "queries": 0})

    def update(self, counts: dict[str, int]) -> None:
        """Redraw from the counters: connections until they are all made, then queries."""
        if not self.tty:
            return
        what = "queries" if counts["connections"] >= self.totals["connections"] else "connections"
        done, total = counts[what], self.totals[what]
        self.frame += 1
        width = 30
        filled = width * min(done, total) // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.monotonic() - self.start
        line = (
            f"  {self.label:<28} {SPINNER[self.frame % 4]} [{bar}] "
            f"{done}/{total} {what}  {elapsed:5.1f} s"
        )
        print(f"\r\033[K{line}", end="", flush=True)

    def end(self, summary: str) -> None:
        start = "\r\033[K" if self.tty else ""
        print(f"{start}  {self.label:<28} {summary}", flush=True)
