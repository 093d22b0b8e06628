# Evaluation harness for nix/module.nix: nixpkgs' lib.evalModules with small stub declarations of the
# NixOS options the module sets, and a fake `pkgs` (no nixpkgs checkout, nothing is built).
#
#   nix-instantiate --eval --strict --json --readonly-mode -E \
#     '(import tests/nix/harness.nix { libPath = /path/to/nixpkgs/lib; }).eval { services.meshctl.node = { … }; }'
#
# `eval MODULE` returns what tests assert on: failed assertion messages, the systemd units and
# timers, firewall settings, /etc entries (with the settings each config file was rendered from),
# users and groups. Used by tests/nix/test_nix_eval.py.
{ libPath, modulePath ? ../../nix/module.nix, flakePath ? ../../flake.nix, packagePath ? ../../nix/package.nix,
  vmTestPath ? ../../nix/tests/vm.nix, pythonNames ? [ ] }:

let
  lib = import libPath;
  inherit (lib) mkOption types;

  fakeHash = "0000000000000000000000000000000a";
  fakePkg = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${fakeHash}-${name}";
    meta.mainProgram = if lib.hasPrefix "meshctl" name then "meshctl" else name;
  };
  pkgs = {
    meshctl = fakePkg "meshctl";
    wireguard-tools = fakePkg "wireguard-tools";
    wireguard-go = fakePkg "wireguard-go";
    iproute2 = fakePkg "iproute2";
    nftables = fakePkg "nftables";
    curl = fakePkg "curl";
    openssh = fakePkg "openssh";
    # Stands in for building nix/package.nix (the flake's module default).
    callPackage = path: args: fakePkg "meshctl-from-${baseNameOf (toString path)}";
    stdenv.hostPlatform.system = "x86_64-linux";
    # Like nixpkgs' pkgs.formats.toml, but "rendering" keeps the value so tests can inspect it.
    formats.toml = { }: {
      type = types.attrsOf types.anything;
      generate = name: value: {
        outPath = "/nix/store/${fakeHash}-${name}";
        inherit name;
        rendered = value;
      };
    };
  };

  anyList = mkOption { type = types.listOf types.anything; default = [ ]; };
  anyAttrs = mkOption { type = types.attrsOf (types.attrsOf types.anything); default = { }; };
  stubs = {
    options = {
      assertions = anyList;
      warnings = anyList;
      environment.systemPackages = anyList;
      environment.etc = anyAttrs;
      users.users = anyAttrs;
      users.groups = anyAttrs;
      networking.firewall = {
        allowedTCPPorts = anyList;
        allowedUDPPorts = anyList;
        trustedInterfaces = anyList;
      };
      systemd.services = anyAttrs;
      systemd.timers = anyAttrs;
      services.openssh.enable = mkOption { type = types.bool; default = false; };
      services.openssh.extraConfig = mkOption { type = types.lines; default = ""; };
      # Set by the VM test's machines only.
      virtualisation.memorySize = mkOption { type = types.int; default = 0; };
    };
  };

  summarize = config: {
    assertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
    inherit (config) warnings;
    services = config.systemd.services;
    timers = config.systemd.timers;
    firewall = config.networking.firewall;
    etc = lib.mapAttrs (_: e: { path = "${e.source}"; settings = e.source.rendered; }) config.environment.etc;
    users = config.users.users;
    groups = lib.attrNames config.users.groups;
    systemPackages = map (p: p.name) config.environment.systemPackages;
    package = config.services.meshctl.package.name;
    sshdExtraConfig = config.services.openssh.extraConfig;
  };

  evalWithPkgs = pkgs': modules: summarize (lib.evalModules {
    modules = [ stubs ] ++ modules;
    specialArgs = { pkgs = pkgs'; };
  }).config;
  evalWith = evalWithPkgs pkgs;

  # nix/package.nix with a fake python3Packages: buildPythonApplication returns its arguments, and
  # the only Python packages that exist are `pythonNames` (what pyproject.toml asks for).
  fakePython = lib.genAttrs pythonNames (n: { pname = n; }) // {
    buildPythonApplication = args: args;
  };
  packageArgs = import packagePath { inherit lib; python3Packages = fakePython; };

  vmTest = import vmTestPath { self = flakeOutputs; };

  flake = import flakePath;
  # nixpkgs as the flake sees it: lib, and per system the fake pkgs with a runNixOSTest that
  # returns what it was given.
  flakeOutputs = flake.outputs {
    self = flakeOutputs;
    nixpkgs = {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: pkgs // {
        stdenv.hostPlatform.system = system;
        testers.runNixOSTest = test: { runNixOSTest = test; };
      });
    };
  };
in
{
  # The module as a user imports it (path import of nix/module.nix).
  eval = module: evalWith [ modulePath module ];
  # The module imported by path into a nixpkgs without pkgs.meshctl (no overlay).
  evalNoOverlay = module: evalWithPkgs (removeAttrs pkgs [ "meshctl" ]) [ modulePath module ];
  # The module as the flake exports it (nixosModules.default, which sets the package).
  evalFlake = module: evalWith [ flakeOutputs.nixosModules.default module ];
  hasExternalPath = types ? externalPath;
  # The flake's outputs, reduced to names.
  flakeSummary = {
    packages = lib.mapAttrs (_: ps: lib.mapAttrs (_: p: p.name) ps) flakeOutputs.packages;
    overlay = (flakeOutputs.overlays.default pkgs pkgs).meshctl.name;
    checks = lib.mapAttrs (_: cs: lib.mapAttrs (_: c: {
      inherit (c.runNixOSTest) name;
      nodes = lib.attrNames c.runNixOSTest.nodes;
    }) cs) flakeOutputs.checks;
    nixosModules = lib.attrNames flakeOutputs.nixosModules;
  };
  # What nix/package.nix hands to buildPythonApplication, with dependencies by name and the source
  # filter applied to a few repository-relative paths.
  package = packageArgs // {
    dependencies = map (p: p.pname) packageArgs.dependencies;
    build-system = map (p: p.pname) packageArgs.build-system;
    src = null;
  };
  sourceIncludes = rel: type: packageArgs.src.filter (toString (dirOf (dirOf packagePath)) + "/" + rel) type;
  # A machine of the VM test (nix/tests/vm.nix) evaluated like the others, and the test's script.
  vmNode = name: evalWith [ vmTest.defaults vmTest.nodes.${name} ];
  vmNodeNames = lib.attrNames vmTest.nodes;
  vmTestScript = vmTest.testScript;
  vmTestName = vmTest.name;
}
