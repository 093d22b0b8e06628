"""The apt mirror the rootfs is built from comes from the machine's own apt configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.lab.errors import LabPrerequisiteError
from meshctl.lab.mirror import find_apt_mirror, mirror_from_deb822, mirror_from_one_line

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_stanza_for_the_suite_wins_over_security() -> None:
    assert mirror_from_deb822(DEB822) == "http://deb.debian.org/debian"


def test_deb822_skips_disabled_and_source_only_stanzas() -> None:
    text = ("Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
            "Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n\n"
            "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nComponents: main contrib\n")
    assert mirror_from_deb822(text) == "http://on.example/debian"


def test_one_line_format_with_options_and_comments() -> None:
    text = ("# deb http://commented.example/debian bookworm main\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib # local\n")
    assert mirror_from_one_line(text) == "http://mirror.example/debian"
    assert mirror_from_one_line("deb http://m.example/debian bullseye main\n") is None


def test_find_reads_sources_list_d_and_strips_trailing_slash(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822.replace("/debian\n", "/debian/\n", 1))
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://x.example/debian bookworm main\n")
    assert find_apt_mirror(tmp_path) == "http://deb.debian.org/debian"


def test_no_usable_source_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://m.example/ubuntu jammy main\n")
    with pytest.raises(LabPrerequisiteError, match="no apt source for Debian bookworm main"):
        find_apt_mirror(tmp_path)
