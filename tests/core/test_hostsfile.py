# SPDX-License-Identifier: BSD-3-Clause
"""Which names the C library answers from the hosts file (``_hostsfile``), on files the test writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from psycogreen.core import _hostsfile

HOSTS = """\
# a comment line
127.0.0.1   localhost  Loopback.Example   # trailing comment
::1         ip6-localhost
not-an-address  broken.example
10.0.0.1
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    hosts, nss = tmp_path / "hosts", tmp_path / "nsswitch.conf"
    hosts.write_text(HOSTS)
    nss.write_text("passwd: files\nhosts:          files dns  # resolve\n")
    monkeypatch.setattr(_hostsfile, "HOSTS", hosts)
    monkeypatch.setattr(_hostsfile, "NSSWITCH", nss)
    monkeypatch.setattr(_hostsfile, "_key", None)
    return hosts, nss


def test_names_and_aliases_of_valid_lines(files: tuple[Path, Path]) -> None:
    assert _hostsfile.answered_locally("localhost")
    assert _hostsfile.answered_locally("LOCALHOST")  # case-insensitive, as glibc compares
    assert _hostsfile.answered_locally("loopback.example")
    assert _hostsfile.answered_locally("ip6-localhost")
    # glibc skips a line whose address it cannot parse: that name would go to DNS
    assert not _hostsfile.answered_locally("broken.example")
    assert not _hostsfile.answered_locally("db.example")
    assert not _hostsfile.answered_locally("comment")


@pytest.mark.parametrize(
    "line",
    [
        "hosts: dns files",
        "hosts: mdns4_minimal [NOTFOUND=return] files dns",
        "hosts:",
        "# hosts: files dns",
        "passwd: files",
    ],
)
def test_only_when_the_file_is_consulted_first(files: tuple[Path, Path], line: str) -> None:
    files[1].write_text(line + "\n")
    assert not _hostsfile.answered_locally("localhost")


def test_missing_files(files: tuple[Path, Path]) -> None:
    files[1].unlink()  # glibc's default order then asks DNS first
    assert not _hostsfile.answered_locally("localhost")
    files[1].write_text("hosts: files\n")
    assert _hostsfile.answered_locally("localhost")
    files[0].unlink()
    assert not _hostsfile.answered_locally("localhost")


def test_an_edited_file_is_read_again(files: tuple[Path, Path]) -> None:
    hosts = files[0]
    assert not _hostsfile.answered_locally("db.example")
    stat = hosts.stat()
    hosts.write_text(HOSTS + "10.1.2.3 db.example\n")
    os.utime(hosts, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _hostsfile.answered_locally("db.example")
