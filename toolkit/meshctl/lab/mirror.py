"""Find the Debian mirror this machine's apt uses (one-line `sources.list` or deb822 `*.sources`)."""

from __future__ import annotations

from pathlib import Path

from .errors import LabPrerequisiteError

__all__ = ["find_apt_mirror", "mirror_from_deb822", "mirror_from_one_line"]

DEFAULT_SUITE = "bookworm"


def mirror_from_one_line(text: str, suite: str = DEFAULT_SUITE) -> str | None:
    """The URI of the first `deb URI SUITE ...main...` line (options in [brackets] allowed)."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        fields = line.split()[1:]
        if fields and fields[0].startswith("["):
            while fields and not fields[0].endswith("]"):
                fields.pop(0)
            fields = fields[1:]
        if len(fields) >= 3 and fields[1] == suite and "main" in fields[2:]:
            return fields[0]
    return None


def mirror_from_deb822(text: str, suite: str = DEFAULT_SUITE) -> str | None:
    """The first URI of the first enabled `Types: deb` stanza listing SUITE and component main."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            name, value = raw.split(":", 1)
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        if suite in fields.get("suites", "").split() and "main" in fields.get("components", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def find_apt_mirror(etc_apt: Path = Path("/etc/apt"), suite: str = DEFAULT_SUITE) -> str:
    """The machine's Debian mirror for SUITE; raises LabPrerequisiteError when apt names none."""
    candidates: list[str | None] = []
    sources_list = etc_apt / "sources.list"
    if sources_list.is_file():
        candidates.append(mirror_from_one_line(sources_list.read_text(), suite))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                candidates.append(mirror_from_one_line(path.read_text(), suite))
            elif path.suffix == ".sources":
                candidates.append(mirror_from_deb822(path.read_text(), suite))
    for found in candidates:
        if found:
            return found.rstrip("/")
    raise LabPrerequisiteError(
        f"no apt source for Debian {suite} main in {etc_apt}/sources.list or sources.list.d",
        hint=f"add a `deb <mirror> {suite} main` line to {sources_list}",
    )
