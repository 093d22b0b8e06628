"""Tests of the NixOS module, package and flake (tier tests/nix)."""
