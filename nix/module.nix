# NixOS module for meshctl: `services.meshctl.{control,derp,node,rotation}`.
#
# Units (docs/contracts.md): meshctl-control.service, meshctl-derp.service, meshctl-agent.service,
# meshctl-rotate.service + meshctl-rotate.timer. State lives in /var/lib/meshctl/{control,derp,agent}
# (StateDirectory), the control and agent configs are linked at /etc/meshctl/{control,agent}.toml
# (the DERP relay runs from flags), the agent's local API socket is /run/meshctl/agent.sock
# (RuntimeDirectory).
#
# Secrets are only ever file *paths* read at run time: systemd copies them into the unit's
# credentials directory (LoadCredential) and the daemon reads them from there (`%d/<name>`).
# A Nix path literal such as `./authkey` would be copied into the world-readable Nix store, so the
# secret options reject it (types.externalPath where lib has it, else a string checked by an
# assertion to be absolute and outside the store).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge mkDefault types optional optionals optionalAttrs;

  cfg = config.services.meshctl;
  tomlFormat = pkgs.formats.toml { };
  storeDir = builtins.storeDir;
  stateRoot = "/var/lib/meshctl";

  # --- types --------------------------------------------------------------------------------

  # A secret file: an absolute path outside the Nix store, given as a string. Newer nixpkgs lib has
  # types.externalPath (rejects path literals and store paths at type-check time); older lib falls
  # back to types.str (which already refuses a path literal) plus the `secretAssertions` below.
  secretPathType = if types ? externalPath then types.externalPath
    else types.str // { description = "string holding an absolute path outside the Nix store"; };

  secretOption = { description, example }: mkOption {
    type = types.nullOr secretPathType;
    default = null;
    inherit example;
    description = description + ''

      Give the path as a string (`"/run/secrets/…"`), never as a Nix path literal: a literal would
      be copied into the world-readable Nix store. The file is read at run time through systemd's
      LoadCredential, so it may be owned by root with mode 0600.
    '';
  };

  listenType = types.strMatching "([A-Za-z0-9._-]+|[[][0-9A-Fa-f:.]+[]]):[0-9]{1,5}";
  durationType = types.strMatching "[0-9]+[smhdw]?";

  hostOf = listen: let m = builtins.match "(.*):[0-9]+" listen; in if m == null then "" else builtins.head m;
  portOf = listen: lib.toInt (lib.last (lib.splitString ":" listen));

  # --- ExecStart rendering ------------------------------------------------------------------

  # systemd splits ExecStart like a shell but also expands `%` specifiers and `$` variables, so
  # every value we did not write ourselves is quoted with those doubled.
  quoteArg = s:
    if builtins.match "[A-Za-z0-9,./:=@_+-]+" s != null then s
    else "\"" + lib.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] s + "\"";
  # `{ raw = "%d/name"; }` is a credential path we wrote ourselves: passed through unquoted.
  credArg = name: { raw = "%d/${name}"; };
  renderArgs = args: lib.concatMapStringsSep " " (a: if builtins.isAttrs a then a.raw else quoteArg (toString a)) args;
  exe = lib.getExe cfg.package;

  # --- hardening shared by the units (compare nixpkgs' headscale / tailscale-derper modules) ---
  hardening = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    RemoveIPC = true;
    PrivateMounts = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" ];
    UMask = "0077";
    Restart = "on-failure";
    RestartSec = "5s";
  };
  # Servers (control, DERP) run as their own unprivileged users with no device access.
  serverHardening = hardening // {
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    PrivateDevices = true;
    ProcSubset = "pid";
    RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
  };
  bindCaps = port: optional (port < 1024) "CAP_NET_BIND_SERVICE";

  # --- secrets ------------------------------------------------------------------------------
  secretOptions = [
    { loc = "control.tls.keyFile"; value = cfg.control.tls.keyFile; enabled = cfg.control.enable; }
    { loc = "control.tls.certFile"; value = cfg.control.tls.certFile; enabled = cfg.control.enable; }
    { loc = "derp.tls.keyFile"; value = cfg.derp.tls.keyFile; enabled = cfg.derp.enable; }
    { loc = "derp.tls.certFile"; value = cfg.derp.tls.certFile; enabled = cfg.derp.enable; }
    { loc = "derp.verifyTokenFile"; value = cfg.derp.verifyTokenFile; enabled = cfg.derp.enable; }
    { loc = "derp.meshKeyFile"; value = cfg.derp.meshKeyFile; enabled = cfg.derp.enable; }
    { loc = "node.authKeyFile"; value = cfg.node.authKeyFile; enabled = cfg.node.enable; }
  ];
  secretAssertions = map (s: {
    assertion = !s.enabled || s.value == null
      || (lib.hasPrefix "/" (toString s.value) && !lib.hasPrefix "${storeDir}/" (toString s.value));
    message = "services.meshctl.${s.loc} = \"${toString s.value}\": a secret must be an absolute path outside "
      + "${storeDir} (a file in the Nix store is world-readable); point it at e.g. /run/secrets/… or /etc/meshctl/….";
  }) secretOptions;

  tlsAssertions = name: tls: [{
    assertion = (tls.certFile == null) == (tls.keyFile == null);
    message = "services.meshctl.${name}.tls: set both certFile and keyFile, or neither (got only "
      + (if tls.certFile == null then "keyFile" else "certFile") + ").";
  }];
  tlsComplete = tls: tls.certFile != null && tls.keyFile != null;
  tlsCredentials = tls: optionals (tlsComplete tls) [ "tls-cert:${tls.certFile}" "tls-key:${tls.keyFile}" ];
  tlsArgs = tls: optionals (tlsComplete tls) [ "--tls-cert" (credArg "tls-cert") "--tls-key" (credArg "tls-key") ];

  listenAssertions = name: listen: [{
    assertion = portOf listen >= 1 && portOf listen <= 65535;
    message = "services.meshctl.${name}.listen = \"${listen}\": the port must be between 1 and 65535.";
  }];

  tlsOptions = what: {
    certFile = secretOption {
      description = "TLS certificate (PEM, full chain) the ${what} serves. Null serves plain HTTP (behind a TLS terminator).";
      example = "/var/lib/acme/mesh.example.com/fullchain.pem";
    };
    keyFile = secretOption {
      description = "Private key of the TLS certificate.";
      example = "/var/lib/acme/mesh.example.com/key.pem";
    };
  };

  # --- rendered configs -----------------------------------------------------------------------
  controlConfig = tomlFormat.generate "meshctl-control.toml" cfg.control.settings;

  agentCredentialDir = "/run/credentials/meshctl-agent.service";
  agentSettings = lib.filterAttrs (_: v: v != null) {
    control_url = cfg.node.controlUrl;
    control_key = cfg.node.controlKey;
    state_dir = "${stateRoot}/agent";
    interface = cfg.node.interfaceName;
    port = cfg.node.port;
    backend = cfg.node.backend;
  } // optionalAttrs (cfg.node.authKeyFile != null) {
    auth_key_file = "${agentCredentialDir}/authkey";
  };
  agentConfig = tomlFormat.generate "meshctl-agent.toml" agentSettings;

  # The rotation job's policy (`meshctl agent rotate --policy`), also at /etc/meshctl/rotation.toml.
  rotationConfig = tomlFormat.generate "meshctl-rotation.toml" {
    rotation = {
      node_key_max_age = cfg.rotation.nodeKeyMaxAge;
      host_cert_renew_before = cfg.rotation.sshHostCertRenewBefore;
    };
  };

  # The relay runs from flags (no config file): STUN listens on the host of `listen`.
  derpStunListen = "${hostOf cfg.derp.listen}:${toString cfg.derp.stunPort}";
  derpKeyFile = "${stateRoot}/derp/derp.key";

  sqliteOrUrl = db: if lib.hasPrefix "/" db then "sqlite:///${db}" else db;
  # What the control unit gets as flags (and the config file as defaults); settings must agree.
  controlFlagged = {
    listen = cfg.control.listen;
    state_dir = "${stateRoot}/control";
  } // optionalAttrs (cfg.control.database != null) { db = sqliteOrUrl cfg.control.database; }
    // optionalAttrs (cfg.control.domain != null) { domain = cfg.control.domain; };
in
{
  options.services.meshctl = {
    package = mkOption {
      type = types.package;
      default = pkgs.meshctl or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "pkgs.meshctl or (pkgs.callPackage ./package.nix { })";
      description = "The meshctl package (the flake's nixosModules.default sets its own build).";
    };

    # ------------------------------------------------------------------ control
    control = {
      enable = mkEnableOption "the meshctl coordination server (meshctl-control.service)";
      listen = mkOption {
        type = listenType;
        default = "127.0.0.1:8080";
        example = "0.0.0.0:8080";
        description = "HOST:PORT the control server listens on (IPv6 hosts in brackets).";
      };
      domain = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "mesh.example.com";
        description = "MagicDNS domain of the mesh; rendered as `domain` in the control config.";
      };
      database = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgresql+psycopg:///meshctl?host=/run/postgresql";
        description = ''
          Null: SQLite in the state directory (/var/lib/meshctl/control/control.db). An absolute path:
          SQLite at that path. Otherwise an SQLAlchemy URL (`sqlite:///…` or `postgresql+psycopg://…`).
          A URL is stored in the Nix store, so it must not hold a password: use peer authentication
          over the unix socket (`?host=/run/postgresql`).
        '';
      };
      settings = mkOption {
        type = types.submodule { freeformType = tomlFormat.type; };
        default = { };
        example = { domain = "mesh.example.com"; };
        description = "Freeform control configuration, rendered to /etc/meshctl/control.toml (TOML). No secrets here.";
      };
      tls = tlsOptions "control server";
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the TCP port of `listen` in the firewall.";
      };
    };

    # ------------------------------------------------------------------ DERP
    derp = {
      enable = mkEnableOption "a meshctl DERP relay with its STUN server (meshctl-derp.service)";
      listen = mkOption {
        type = listenType;
        default = "0.0.0.0:443";
        example = "0.0.0.0:8443";
        description = "HOST:PORT of the relay's HTTP(S) listener.";
      };
      stunPort = mkOption {
        type = types.port;
        default = 3478;
        description = "UDP port of the STUN server (on the host of `listen`).";
      };
      regionId = mkOption {
        type = types.ints.between 900 999;
        default = 900;
        description = "DERP region id of this relay (900–999).";
      };
      regionCode = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "fra";
        description = ''
          Short region code, shown in the unit's description. The relay itself does not use it: the DERP
          map nodes receive (region ids, codes, relay host names) is the control server's
          `settings.derp.regions`.
        '';
      };
      verifyUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://control.example.com/derp/verify";
        description = "Control server URL that admits clients (`/derp/verify`). Null admits every client.";
      };
      verifyTokenFile = secretOption {
        description = "DERP admission token (`mskey-derp-…`) the relay presents to `verifyUrl`.";
        example = "/etc/meshctl/derp-token";
      };
      verifyFailOpen = mkOption {
        type = types.bool;
        default = false;
        description = "Admit clients while `verifyUrl` cannot be reached (default: refuse them until it answers).";
      };
      meshWith = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "https://derp2.example.com" ];
        description = "URLs of the other relays of this region to mesh with.";
      };
      meshKeyFile = secretOption {
        description = "Shared DERP mesh key of the region (64 hex characters). Required with `meshWith`.";
        example = "/etc/meshctl/derp-mesh.key";
      };
      tls = tlsOptions "relay";
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the TCP port of `listen` and 80/tcp (ACME HTTP-01, as derper hosts do), and `stunPort`/udp.";
      };
    };

    # ------------------------------------------------------------------ node
    node = {
      enable = mkEnableOption "the meshctl node agent (meshctl-agent.service), which drives WireGuard";
      controlUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://control.example.com";
        description = "URL of the control server.";
      };
      controlKey = mkOption {
        type = types.nullOr (types.strMatching "ctrlkey:[0-9a-f]{64}");
        default = null;
        example = "ctrlkey:2f1c…";
        description = "The control server's public key (`ctrlkey:…`, `cat /var/lib/meshctl/control/control.pub` on the control host); pinned, a mismatch is a hard error.";
      };
      authKeyFile = secretOption {
        description = ''
          File holding a one-off auth key (`mskey-auth-…`) for the first registration. Once the node is
          registered the agent no longer needs it, but the file must stay in place while this is set
          (systemd refuses to start a unit whose credential file is missing): set it to null afterwards.
        '';
        example = "/etc/meshctl/authkey";
      };
      interfaceName = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
        default = "mesh0";
        description = "Name of the WireGuard interface.";
      };
      port = mkOption {
        type = types.ints.between 1 65534;
        default = 41641;
        description = "UDP port of WireGuard; the agent's discovery/STUN socket uses the next port (port + 1).";
      };
      backend = mkOption {
        type = types.enum [ "auto" "kernel" "userspace" ];
        default = "auto";
        description = "WireGuard backend: kernel module, wireguard-go, or auto (kernel if it works).";
      };
      trustInterface = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Add the interface to networking.firewall.trustedInterfaces, so every peer the mesh policy
          allows reaches every local port. Off by default: the host firewall then still applies to
          mesh traffic (ICMP echo is allowed by NixOS' default firewall; open other ports with
          networking.firewall.interfaces.mesh0.allowedTCPPorts).
        '';
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--verbose" ];
        description = "Extra arguments appended to `meshctl agent run`.";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open `port` and `port + 1` (udp), so peers reach this node directly rather than through NAT traversal or DERP.";
      };
    };

    # ------------------------------------------------------------------ rotation
    rotation = {
      enable = mkEnableOption "the scheduled rotation job (meshctl-rotate.timer) on a node";
      schedule = mkOption {
        type = types.str;
        default = "daily";
        example = "*-*-* 03:00:00";
        description = "When the rotation job runs (systemd OnCalendar); it rotates only what is due.";
      };
      nodeKeyMaxAge = mkOption {
        type = durationType;
        default = "180d";
        description = "Rotate the node key once it is older than this (e.g. 90d, 12h).";
      };
      sshHostCertRenewBefore = mkOption {
        type = durationType;
        default = "10d";
        description = "Renew the SSH host certificate when less than this is left.";
      };
      sshdInclude = mkOption {
        type = types.bool;
        default = true;
        description = ''
          When services.openssh is enabled, include the drop-in the job writes
          (/etc/ssh/sshd_config.d/meshctl.conf: HostCertificate lines and TrustedUserCAKeys for the
          mesh's user CA) at the top of services.openssh.extraConfig, so sshd presents the mesh host
          certificate and accepts mesh user certificates.
        '';
      };
    };
  };

  config = mkMerge [
    # Checks that hold whatever is enabled.
    {
      assertions = secretAssertions;
    }

    (mkIf (cfg.control.enable || cfg.derp.enable || cfg.node.enable) {
      environment.systemPackages = [ cfg.package ];
    })

    # ---------------------------------------------------------------- control
    (mkIf cfg.control.enable {
      assertions = tlsAssertions "control" cfg.control.tls ++ listenAssertions "control" cfg.control.listen ++ [
        {
          assertion = cfg.control.database == null
            || builtins.match "[A-Za-z0-9+]+://[^/@]*:[^/@]*@.*" cfg.control.database == null;
          message = "services.meshctl.control.database holds a password; it would be world-readable in the Nix store. "
            + "Use peer authentication over the unix socket, e.g. \"postgresql+psycopg:///meshctl?host=/run/postgresql\".";
        }
        {
          assertion = builtins.all (k: (cfg.control.settings.${k} or null) == (controlFlagged.${k} or null))
            (lib.attrNames controlFlagged);
          message = "services.meshctl.control.settings: set listen, state_dir, db and domain through "
            + "services.meshctl.control.{listen,database,domain} (the unit passes them as flags), not in settings.";
        }
        {
          assertion = cfg.control.database == null || lib.hasPrefix "/" cfg.control.database
            || lib.hasPrefix "sqlite:" cfg.control.database || lib.hasPrefix "postgresql" cfg.control.database;
          message = "services.meshctl.control.database = \"${toString cfg.control.database}\": want an absolute SQLite path, "
            + "a sqlite:/// URL or a postgresql+psycopg:// URL.";
        }
      ];

      # The same values the unit passes as flags, so /etc/meshctl/control.toml is complete for the
      # local admin commands run on this host (`meshctl control authkey --config …`).
      services.meshctl.control.settings = {
        listen = mkDefault cfg.control.listen;
        state_dir = mkDefault "${stateRoot}/control";
        domain = mkIf (cfg.control.domain != null) (mkDefault cfg.control.domain);
        db = mkIf (cfg.control.database != null) (mkDefault (sqliteOrUrl cfg.control.database));
      };

      environment.etc."meshctl/control.toml".source = controlConfig;

      users.users.meshctl-control = { isSystemUser = true; group = "meshctl-control"; description = "meshctl control server"; };
      users.groups.meshctl-control = { };

      networking.firewall.allowedTCPPorts = mkIf cfg.control.openFirewall [ (portOf cfg.control.listen) ];

      systemd.services.meshctl-control = {
        description = "meshctl coordination server";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ optional (cfg.control.database != null
          && lib.hasPrefix "postgresql" cfg.control.database) "postgresql.service";
        serviceConfig = serverHardening // {
          ExecStart = renderArgs ([ exe "control" "serve"
            "--config" "${controlConfig}"
            "--state-dir" "${stateRoot}/control"
            "--listen" cfg.control.listen
          ] ++ optionals (cfg.control.database != null) [ "--db" (sqliteOrUrl cfg.control.database) ]
            ++ tlsArgs cfg.control.tls);
          User = "meshctl-control";
          Group = "meshctl-control";
          StateDirectory = "meshctl/control";
          StateDirectoryMode = "0700";
          LoadCredential = tlsCredentials cfg.control.tls;
          CapabilityBoundingSet = [ "" ] ++ bindCaps (portOf cfg.control.listen);
          AmbientCapabilities = bindCaps (portOf cfg.control.listen);
        };
      };
    })

    # ---------------------------------------------------------------- DERP
    (mkIf cfg.derp.enable {
      assertions = tlsAssertions "derp" cfg.derp.tls ++ listenAssertions "derp" cfg.derp.listen ++ [
        {
          assertion = cfg.derp.meshWith == [ ] || cfg.derp.meshKeyFile != null;
          message = "services.meshctl.derp.meshWith is set but meshKeyFile is not: relays of a region mesh only with "
            + "the shared mesh key (64 hex characters in a file, e.g. /etc/meshctl/derp-mesh.key).";
        }
        {
          assertion = (cfg.derp.verifyUrl == null) == (cfg.derp.verifyTokenFile == null);
          message = "services.meshctl.derp: verifyUrl and verifyTokenFile go together (the relay authenticates to "
            + "the control server's /derp/verify with the token); set both or neither.";
        }
      ];

      users.users.meshctl-derp = { isSystemUser = true; group = "meshctl-derp"; description = "meshctl DERP relay"; };
      users.groups.meshctl-derp = { };

      networking.firewall = mkIf cfg.derp.openFirewall {
        allowedTCPPorts = lib.unique [ (portOf cfg.derp.listen) 80 ];
        allowedUDPPorts = [ cfg.derp.stunPort ];
      };

      systemd.services.meshctl-derp = {
        description = "meshctl DERP relay and STUN server (region ${toString cfg.derp.regionId}"
          + lib.optionalString (cfg.derp.regionCode != null) " ${cfg.derp.regionCode}" + ")";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        serviceConfig = serverHardening // {
          ExecStart = renderArgs ([ exe "derp" "serve"
            "--listen" cfg.derp.listen
            "--stun-listen" derpStunListen
            "--key-file" derpKeyFile
            "--region-id" (toString cfg.derp.regionId)
          ] ++ tlsArgs cfg.derp.tls
            ++ optionals (cfg.derp.verifyUrl != null) [ "--verify-url" cfg.derp.verifyUrl "--verify-token-file" (credArg "verify-token") ]
            ++ optional (cfg.derp.verifyUrl != null && cfg.derp.verifyFailOpen) "--verify-fail-open"
            ++ optionals (cfg.derp.meshWith != [ ]) [ "--mesh-with" (lib.concatStringsSep "," cfg.derp.meshWith) "--mesh-key-file" (credArg "mesh-key") ]);
          User = "meshctl-derp";
          Group = "meshctl-derp";
          StateDirectory = "meshctl/derp";
          StateDirectoryMode = "0700";
          LoadCredential = tlsCredentials cfg.derp.tls
            ++ optional (cfg.derp.verifyTokenFile != null) "verify-token:${cfg.derp.verifyTokenFile}"
            ++ optional (cfg.derp.meshKeyFile != null) "mesh-key:${cfg.derp.meshKeyFile}";
          CapabilityBoundingSet = [ "" ] ++ bindCaps (lib.min (portOf cfg.derp.listen) cfg.derp.stunPort);
          AmbientCapabilities = bindCaps (lib.min (portOf cfg.derp.listen) cfg.derp.stunPort);
        };
      };
    })

    # ---------------------------------------------------------------- node
    (mkIf cfg.node.enable {
      assertions = [
        {
          assertion = cfg.node.controlUrl != null;
          message = "services.meshctl.node.enable is set but controlUrl is not: give the control server's URL, "
            + "e.g. services.meshctl.node.controlUrl = \"https://control.example.com\".";
        }
        {
          assertion = cfg.node.controlKey != null;
          message = "services.meshctl.node.enable is set but controlKey is not: pin the control server's public key "
            + "(services.meshctl.node.controlKey = \"ctrlkey:…\", from /var/lib/meshctl/control/control.pub on the control host).";
        }
        {
          assertion = cfg.node.controlUrl == null || builtins.match "https?://.+" cfg.node.controlUrl != null;
          message = "services.meshctl.node.controlUrl = \"${toString cfg.node.controlUrl}\": want an http:// or https:// URL.";
        }
      ];

      environment.etc."meshctl/agent.toml".source = agentConfig;

      networking.firewall = {
        allowedUDPPorts = mkIf cfg.node.openFirewall [ cfg.node.port (cfg.node.port + 1) ];
        trustedInterfaces = mkIf cfg.node.trustInterface [ cfg.node.interfaceName ];
      };

      systemd.services.meshctl-agent = {
        description = "meshctl node agent";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" "nss-lookup.target" ];
        path = [ pkgs.wireguard-tools pkgs.wireguard-go pkgs.iproute2 pkgs.nftables ];
        # One restart on activation rather than a stop now and a start later (as tailscaled does).
        stopIfChanged = false;
        serviceConfig = hardening // {
          ExecStart = renderArgs ([ exe "agent" "run" "--config" "${agentConfig}" ] ++ cfg.node.extraArgs);
          # Runs as root, held to the capabilities a WireGuard agent needs: interfaces, routes and
          # nftables (NET_ADMIN), raw sockets (NET_RAW), MagicDNS on port 53 (NET_BIND_SERVICE).
          CapabilityBoundingSet = [ "CAP_NET_ADMIN" "CAP_NET_RAW" "CAP_NET_BIND_SERVICE" ];
          AmbientCapabilities = [ "CAP_NET_ADMIN" "CAP_NET_RAW" "CAP_NET_BIND_SERVICE" ];
          DevicePolicy = "closed";
          DeviceAllow = [ "/dev/net/tun rw" ];
          PrivateDevices = false;
          # Routes and per-interface settings under /proc/sys/net.
          ProtectKernelTunables = false;
          # MagicDNS without systemd-resolved rewrites this one file in place (and puts it back on stop).
          ReadWritePaths = [ "-/etc/resolv.conf" ];
          LimitNOFILE = 65536;
          RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
          StateDirectory = "meshctl/agent";
          StateDirectoryMode = "0700";
          # /run/meshctl: the local API socket; /run/wireguard: wireguard-go's control sockets.
          RuntimeDirectory = [ "meshctl" "wireguard" ];
          RuntimeDirectoryMode = "0700";
          LoadCredential = optional (cfg.node.authKeyFile != null) "authkey:${cfg.node.authKeyFile}";
        };
      };
    })

    # ---------------------------------------------------------------- rotation
    (mkIf cfg.rotation.enable {
      assertions = [{
        assertion = cfg.node.enable;
        message = "services.meshctl.rotation.enable needs services.meshctl.node.enable: the rotation job reads the "
          + "agent's config and asks the local agent (/run/meshctl/agent.sock) to rotate what is due.";
      }];

      environment.etc."meshctl/rotation.toml".source = rotationConfig;

      # A glob, so sshd (and the build-time `sshd -t` check) is fine before the first certificate.
      services.openssh.extraConfig = mkIf (cfg.rotation.sshdInclude && config.services.openssh.enable)
        (lib.mkBefore "Include /etc/ssh/sshd_config.d/meshctl*.conf");

      systemd.services.meshctl-rotate = {
        description = "meshctl: rotate node key and SSH host certificate when due";
        # The node-key job asks the running agent; the host-certificate job talks to control itself.
        after = [ "meshctl-agent.service" "network-online.target" ];
        wants = [ "network-online.target" ];
        # sshd -t checks a new certificate configuration before sshd is reloaded.
        path = [ pkgs.openssh ];
        restartIfChanged = false;
        serviceConfig = hardening // {
          Type = "oneshot";
          Restart = "no";
          ExecStart = renderArgs [ exe "agent" "rotate" "--if-due" "--config" "${agentConfig}"
            "--policy" "${rotationConfig}" ];
          PrivateDevices = true;
          CapabilityBoundingSet = [ "" ];
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          # The agent's socket and state (node.key's age), and /etc/ssh for the host certificates
          # and the sshd drop-in.
          ReadWritePaths = [ "-/run/meshctl" "-${stateRoot}/agent" "-/etc/ssh" ];
        };
      };

      systemd.timers.meshctl-rotate = {
        description = "meshctl rotation schedule";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.rotation.schedule;
          Persistent = true;
          RandomizedDelaySec = "1h";
        };
      };
    })
  ];
}
