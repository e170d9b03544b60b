# SPDX-License-Identifier: BSD-3-Clause
"""Every page of the built site, opened from disk in a real browser (headless Chromium).

Runs after ``hatch run docs:build`` (``scripts/test-all`` does both): each page of ``site/``
must load, each internal link must name a file of the site (not a folder: opened from disk, a
folder shows its listing) and, with a ``#fragment``, an element of that page; each image must
be a file that the browser decoded (``naturalWidth > 0``), and an SVG one well-formed XML with
its text as text.

One browser for every page, driven through the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ending in a NUL byte on file descriptors 3 and 4),
which needs nothing beyond the standard library.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.support.env import missing

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"
SOURCES = [ROOT / "mkdocs.yml", *sorted((ROOT / "docs").rglob("*"))]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--remote-debugging-pipe",
)
PAGE_TIMEOUT = 30.0

# What each page tells about itself, once loaded.
INSPECT = """JSON.stringify({
  title: document.title,
  h1: Array.from(document.querySelectorAll("article h1, h1")).map(h => h.textContent.trim()),
  links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  ids: Array.from(document.querySelectorAll("[id]")).map(e => e.id),
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth
  })),
  height: document.documentElement.scrollHeight
})"""


class BrowserError(RuntimeError):
    """The browser did not answer, or answered a command with an error."""


def _above_four(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class DevTools:
    """A headless browser and one page (a tab) of it, driven over the DevTools pipe."""

    def __init__(self, browser: str, profile: Path) -> None:
        # The browser's ends, above 3 and 4, so that moving one to 3 cannot close the other.
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        commands_r, replies_w = _above_four(commands_r), _above_four(replies_w)
        # The browser reads commands from fd 3 and writes replies to fd 4: a small Python puts
        # the pipes there and becomes the browser.
        script = (
            "import os, sys\n"
            f"os.dup2({commands_r}, 3)\nos.dup2({replies_w}, 4)\n"
            "os.execvp(sys.argv[1], sys.argv[1:])"
        )
        command = [browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *command],
            pass_fds=(commands_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_r)
        os.close(replies_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        self.call("Page.enable", session=self.session)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise BrowserError(f"the browser exited (status {self.proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + PAGE_TIMEOUT
        while True:
            reply = self._message(deadline)
            if reply.get("id") != self._next_id:
                self._events.append(reply)
                continue
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            return dict(reply.get("result", {}))

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + PAGE_TIMEOUT
        while True:
            for index, seen in enumerate(self._events):
                if seen.get("method") == event and seen.get("sessionId") == self.session:
                    del self._events[: index + 1]
                    return
            self._events.append(self._message(deadline))

    def open(self, url: str) -> dict[str, Any]:
        """Load ``url`` and wait for its load event (images included); what INSPECT tells."""
        self._events.clear()
        result = self.call("Page.navigate", {"url": url}, self.session)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")
        value = self.call(
            "Runtime.evaluate", {"expression": INSPECT, "returnByValue": True}, self.session
        )
        return dict(json.loads(value["result"]["value"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the browser this test started
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)


def find_browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    missing(f"no Chromium ({', '.join(BROWSERS)}) on PATH (Debian: apt-get install chromium)")
    raise AssertionError  # pragma: no cover (missing() does not return)


@pytest.fixture(scope="module")
def site() -> Path:
    """The built site, as new as its sources."""
    index = SITE / "index.html"
    if not index.exists():
        missing("site/ is not built: run `hatch run docs:build` first (scripts/test-all does)")
    newest = max(p.stat().st_mtime for p in SOURCES if p.is_file())
    if newest > index.stat().st_mtime:
        missing("site/ is older than docs/ or mkdocs.yml: run `hatch run docs:build` again")
    return SITE


@pytest.fixture(scope="module")
def pages(site: Path) -> Iterator[dict[Path, dict[str, Any]]]:
    """Every HTML page of the site, opened in the browser: what each tells about itself."""
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="psycogreen-browser-") as profile:
        tools = DevTools(browser, Path(profile))
        try:
            seen = {}
            for page in sorted(site.rglob("*.html")):
                seen[page] = tools.open(page.as_uri())
            yield seen
        finally:
            tools.close()


def local_path(url: str) -> tuple[Path, str] | None:
    """The file a file:// URL names, and its fragment; None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)), unquote(parts.fragment)


def test_every_page_loads(pages: dict[Path, dict[str, Any]], site: Path) -> None:
    assert (site / "index.html") in pages
    assert len(pages) >= 20  # every page of mkdocs.yml's nav, the API reference, the 404 page
    for page, seen in pages.items():
        assert seen["title"], page
        assert seen["h1"], f"{page}: no heading"


def test_every_internal_link_resolves(pages: dict[Path, dict[str, Any]], site: Path) -> None:
    broken = []
    for page, seen in pages.items():
        if page == site / "404.html":
            # A web server sends it for any missing path, at any depth: mkdocs gives it links
            # from the server's root (/index.html), which no page opened from disk ever shows.
            continue
        for url in seen["links"]:
            target = local_path(url)
            if target is None:
                continue
            path, fragment = target
            if path.is_dir():
                broken.append(f"{page.relative_to(site)}: {url} is a folder, not a page")
            elif not path.is_file():
                broken.append(f"{page.relative_to(site)}: {url} does not exist")
            elif fragment and path in pages and fragment not in pages[path]["ids"]:
                broken.append(f"{page.relative_to(site)}: {url}: no #{fragment} on that page")
    assert not broken, "\n".join(broken)


def test_every_image_shows(pages: dict[Path, dict[str, Any]], site: Path) -> None:
    shown = 0
    bad = []
    for page, seen in pages.items():
        for image in seen["images"]:
            where = f"{page.relative_to(site)}: {image['src']}"
            target = local_path(image["src"])
            if target is None:
                bad.append(f"{where}: not a file of the site")
                continue
            path = target[0]
            if not path.is_file():
                bad.append(f"{where}: no such file")
                continue
            if not image["complete"] or image["width"] == 0:
                bad.append(f"{where}: the browser could not show it")
                continue
            if path.suffix == ".svg":
                root = ET.parse(path).getroot()  # well-formed, or this raises
                texts = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text]
                if not texts:
                    bad.append(f"{where}: an SVG without text elements")
            shown += 1
    assert not bad, "\n".join(bad)
    assert shown >= 4  # the benchmarks page's charts, at least


def test_the_benchmark_charts_are_on_their_page(pages: dict[Path, dict[str, Any]]) -> None:
    seen = pages[SITE / "benchmarks.html"]
    charts = {Path(urlsplit(i["src"]).path).name for i in seen["images"]}
    assert {"throughput.svg", "query-cpu.svg", "batch-500.svg", "hub-gaps.svg"} <= charts
