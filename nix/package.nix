# meshctl as a Python application, built from this checkout with hatchling (see pyproject.toml).
#
#   nix-build -E 'with import <nixpkgs> { }; callPackage ./nix/package.nix { }'
#   or, with flakes: nix build .#meshctl
{ lib, python3Packages, src ? null }:

let
  root = ../.;
  pyprojectToml = builtins.fromTOML (builtins.readFile (root + "/pyproject.toml"));

  # Top-level paths of a working checkout that are not part of the source.
  excluded = [ ".venv" ".git" ".mypy_cache" ".ruff_cache" ".pytest_cache" ".hypothesis" ".lab" "ws"
               "wheelhouse" "build" "dist" "result" ];
  defaultSrc = lib.cleanSourceWith {
    name = "meshctl-source";
    src = lib.cleanSource root;
    filter = path: type:
      let rel = lib.removePrefix (toString root + "/") (toString path);
      in !(builtins.elem rel excluded) && baseNameOf path != "__pycache__";
  };
in
python3Packages.buildPythonApplication {
  pname = "meshctl";
  inherit (pyprojectToml.project) version;
  src = if src == null then defaultSrc else src;

  pyproject = true;
  build-system = [ python3Packages.hatchling ];

  # [project] dependencies of pyproject.toml, by nixpkgs attribute. `psycopg[binary]` maps to plain
  # psycopg: nixpkgs' psycopg carries its C implementation, and the runtime-deps check compares
  # distribution names and versions, not extras.
  dependencies = with python3Packages; [
    pyinfra
    pytest-testinfra
    typer
    rich
    pynacl
    httpx
    jinja2
    fastapi
    uvicorn
    sqlalchemy
    alembic
    cryptography
    prometheus-client
    psycopg
    dnspython
  ];

  # Majors that may move faster in nixpkgs than this project's upper bounds: their version ranges are
  # not enforced at build time (pythonRuntimeDepsCheckHook would fail the build on a newer nixpkgs).
  pythonRelaxDeps = [ "pytest-testinfra" "rich" "cryptography" ];

  # The test suite needs root, network namespaces, sshd, PostgreSQL and a lab of containers; it runs
  # with `make test`, and the NixOS VM test is the flake's `checks`. Here only the import is checked.
  doCheck = false;
  pythonImportsCheck = [ "meshctl" ];

  meta = {
    inherit (pyprojectToml.project) description;
    license = lib.licenses.mit;
    mainProgram = "meshctl";
    platforms = lib.platforms.linux;
  };
}
