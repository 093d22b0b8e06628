"""Fixtures of the nix tier: a private `nix-instantiate`, and the nixpkgs lib given by NIXPKGS_LIB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .nixtool import NIX_INSTANTIATE, Nix


@pytest.fixture(scope="session")
def nix(tmp_path_factory: pytest.TempPathFactory) -> Nix:
    if NIX_INSTANTIATE is None:
        pytest.skip("nix-instantiate is not installed (Debian: apt-get install nix-bin)")
    return Nix(tmp_path_factory.mktemp("nix"))


@pytest.fixture(scope="session")
def nixpkgs_lib() -> Path:
    value = os.environ.get("NIXPKGS_LIB")
    if not value:
        pytest.skip("NIXPKGS_LIB is not set: point it at a nixpkgs lib/ directory (e.g. lib/ of a "
                    "nix-community/nixpkgs.lib checkout) to evaluate nix/module.nix")
    path = Path(value)
    # Set but wrong is a mistake to report, not a reason to skip.
    assert (path / "default.nix").is_file() and (path / "modules.nix").is_file(), (
        f"NIXPKGS_LIB={value} is not a nixpkgs lib directory (no default.nix and modules.nix there)")
    return path
