# NixOS VM test: a control server, a DERP relay and two nodes, all from services.meshctl; the nodes
# get mesh addresses and ping each other over the mesh, directly and then with direct UDP between
# them blocked (so through the relay).
#
#   nix build .#checks.x86_64-linux.vm -L                       (needs KVM)
#   nix run .#checks.x86_64-linux.vm.driverInteractive          (to poke at the VMs)
{ self }:

let
  # TEST-ONLY control key pair, made for this test with `meshctl keys generate control`; never use it
  # anywhere else. Nodes pin the control key at evaluation time, so the test seeds the control
  # server's state with the private half instead of reading back a key made at first start.
  controlPrivateKey = "ctrlprivkey:239501134beb6cad2cdc45f14e664e670702269e38566c9ed5cee14ed576ef72";
  controlPublicKey = "ctrlkey:33cdb4fa43406129c5cbda240dace4e1c157c87f7c2d20a9d3b09d42f479ce00";
  controlUrl = "http://control:8080";

  node = { lib, pkgs, ... }: {
    environment.systemPackages = [ pkgs.curl ];
    services.meshctl.node = {
      enable = true;
      inherit controlUrl;
      controlKey = controlPublicKey;
      # Written by the test script once the control server has minted an auth key.
      authKeyFile = "/etc/meshctl/authkey";
      openFirewall = true;
      backend = "userspace";
    };
    # Started by the test script after the auth key is in place.
    systemd.services.meshctl-agent.wantedBy = lib.mkForce [ ];
  };
in
{
  name = "meshctl";

  defaults = {
    imports = [ self.nixosModules.default ];
    virtualisation.memorySize = 1024;
  };

  nodes.control = { pkgs, ... }: {
    services.meshctl.control = {
      enable = true;
      listen = "0.0.0.0:8080";
      openFirewall = true;
      domain = "mesh.test";
      settings.derp.regions = [{
        id = 900;
        code = "vm";
        name = "VM test";
        nodes = [{ name = "900a"; host_name = "derp"; derp_port = 8443; stun_port = 3478; plain_http = true; }];
      }];
    };
    systemd.services.meshctl-control.preStart = ''
      if [ ! -e /var/lib/meshctl/control/control.key ]; then
        (umask 077; printf '%s\n' '${controlPrivateKey}' > /var/lib/meshctl/control/control.key)
      fi
    '';
  };

  nodes.derp = { lib, ... }: {
    services.meshctl.derp = {
      enable = true;
      listen = "0.0.0.0:8443";
      regionId = 900;
      regionCode = "vm";
      openFirewall = true;
      # Only nodes the control server knows are admitted; the token is minted by the test script.
      verifyUrl = "${controlUrl}/derp/verify";
      verifyTokenFile = "/etc/meshctl/derp-token";
    };
    systemd.services.meshctl-derp.wantedBy = lib.mkForce [ ];
  };

  nodes.node1 = node;
  nodes.node2 = node;

  testScript = ''
    import json

    start_all()
    control.wait_for_unit("meshctl-control.service")
    control.wait_for_open_port(8080)

    # The pinned key is the one the server serves.
    served = json.loads(node1.wait_until_succeeds("curl -sf ${controlUrl}/key", timeout=60))
    assert served["controlKey"] == "${controlPublicKey}", served

    # Secrets minted on the control host (as the service's user, so the store keeps its owner) and
    # handed over as root-only files, which the units read through LoadCredential.
    local = "runuser -u meshctl-control -- meshctl control {} --config /etc/meshctl/control.toml"
    token = control.succeed(local.format("derp-token")).strip()
    auth = json.loads(control.succeed(local.format("authkey") + " --reusable --json"))["key"]

    derp.succeed(f"install -D -m 0600 /dev/null /etc/meshctl/derp-token && printf '%s' {token} > /etc/meshctl/derp-token")
    derp.systemctl("start meshctl-derp.service")
    derp.wait_for_unit("meshctl-derp.service")
    derp.wait_for_open_port(8443)

    for n in (node1, node2):
        n.succeed(f"install -D -m 0600 /dev/null /etc/meshctl/authkey && printf '%s' {auth} > /etc/meshctl/authkey")
        n.systemctl("start meshctl-agent.service")
        n.wait_for_unit("meshctl-agent.service")
        n.wait_until_succeeds("ip -4 -o addr show dev mesh0 | grep -q ' 100\\.'", timeout=120)

    def mesh_ip(n) -> str:
        return n.succeed("ip -4 -o addr show dev mesh0 | awk '{print $4}' | cut -d/ -f1").strip()

    ip1, ip2 = mesh_ip(node1), mesh_ip(node2)
    node1.wait_until_succeeds(f"ping -c1 -W2 {ip2}", timeout=120)
    node2.wait_until_succeeds(f"ping -c1 -W2 {ip1}", timeout=120)

    # Block direct UDP between the nodes: the mesh falls back to the DERP relay, which admits them
    # only because control vouches for them (fail-closed admission with the token from above).
    # (each resolves the other's name: its own may also map to 127.0.0.2)
    lan2 = node1.succeed("getent ahostsv4 node2 | awk 'NR==1 {print $1}'").strip()
    lan1 = node2.succeed("getent ahostsv4 node1 | awk 'NR==1 {print $1}'").strip()
    node1.succeed(f"iptables -I OUTPUT -p udp -d {lan2} -j DROP")
    node2.succeed(f"iptables -I OUTPUT -p udp -d {lan1} -j DROP")
    node1.wait_until_succeeds(f"ping -c1 -W2 {ip2}", timeout=180)
    node2.wait_until_succeeds(f"ping -c1 -W2 {ip1}", timeout=180)

    # Secrets stay out of the store and the agent's state is private.
    node1.succeed("test \"$(stat -c %a /var/lib/meshctl/agent)\" = 700")
    node1.fail("grep -l mskey-auth /nix/store/*meshctl-agent.toml")
    control.fail("grep -rl mskey- /nix/store/*meshctl-control.toml")
  '';
}
