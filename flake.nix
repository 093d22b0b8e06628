{
  description = "meshctl: a Tailscale-style WireGuard mesh VPN on hosts you own";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        meshctl = pkgs.callPackage ./nix/package.nix { };
        default = meshctl;
      });

      overlays.default = final: prev: {
        meshctl = final.callPackage ./nix/package.nix { };
      };

      # The module, with services.meshctl.package defaulting to this flake's build (made with the
      # importing system's pkgs, so it follows that system's nixpkgs).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.meshctl.package = lib.mkDefault (pkgs.callPackage ./nix/package.nix { });
      };
      nixosModules.meshctl = self.nixosModules.default;

      # Needs KVM: nix build .#checks.x86_64-linux.vm -L
      checks = forAllSystems (pkgs: {
        vm = pkgs.testers.runNixOSTest (import ./nix/tests/vm.nix { inherit self; });
      });
    };
}
