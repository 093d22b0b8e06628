"""Every .nix file of the repository parses (`nix-instantiate --parse`, Nix 2.8 from Debian's nix-bin)."""

from __future__ import annotations

from pathlib import Path

from .nixtool import REPO, Nix

# Directories of a working checkout that are not the project's source.
SKIP_DIRS = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".lab", "ws",
             "wheelhouse", "build", "dist", "node_modules", "result"}

# The files the NixOS integration consists of; the walk below must find each of them.
EXPECTED = {"flake.nix", "nix/module.nix", "nix/package.nix", "nix/tests/vm.nix", "tests/nix/harness.nix"}


def nix_files() -> list[Path]:
    found: list[Path] = []

    def walk(d: Path) -> None:
        for entry in sorted(d.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in SKIP_DIRS:
                    walk(entry)
            elif entry.suffix == ".nix" and entry.is_file():
                found.append(entry)

    walk(REPO)
    return found


def test_nix_nix_files_found() -> None:
    rel = {str(p.relative_to(REPO)) for p in nix_files()}
    missing = EXPECTED - rel
    assert not missing, f"expected Nix files not found: {sorted(missing)}"


def test_nix_every_file_parses(nix: Nix) -> None:
    failures = {}
    for path in nix_files():
        err = nix.parse(path)
        if err is not None:
            failures[str(path.relative_to(REPO))] = err
    assert not failures, "files that do not parse:\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())


def test_nix_parse_check_catches_a_syntax_error(nix: Nix) -> None:
    # The check above is only worth something if a broken file fails it.
    assert nix.parse_text("{ a = 1; b = ; }") is not None
    assert nix.parse_text("{ a = 1; b = [ 2 ]; }") is None
