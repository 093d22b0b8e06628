"""IP address management (pure): one IPv4 and one IPv6 per node, never reused while the node exists.

Addresses are handed out lowest-free-first from the configured prefixes, skipping the network
address, the broadcast address and 100.100.100.100 (MagicDNS's resolver). Allocation needs the set
of addresses in use; the caller holds it (the in-memory registry), and the database's UNIQUE
constraints are the backstop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container

from .errors import ControlError

__all__ = ["RESERVED_V4", "AddressPoolExhaustedError", "Ipam"]

RESERVED_V4 = frozenset({ipaddress.IPv4Address("100.100.100.100")})


class AddressPoolExhaustedError(ControlError):
    def __init__(self, prefix: str) -> None:
        super().__init__(f"no free address left in {prefix}", hint="use a larger prefix or delete unused nodes")


class Ipam:
    def __init__(self, v4: ipaddress.IPv4Network, v6: ipaddress.IPv6Network) -> None:
        self.v4 = v4
        self.v6 = v6
        self._next4 = 1  # search hints: allocation is amortised O(1) when nodes are only added
        self._next6 = 1

    def allocate(self, used4: Container[str], used6: Container[str]) -> tuple[str, str]:
        return self._alloc4(used4), self._alloc6(used6)

    def _alloc4(self, used: Container[str]) -> str:
        size = self.v4.num_addresses
        base = int(self.v4.network_address)
        for start in (self._next4, 1):
            for off in range(start, size - 1):
                addr = ipaddress.IPv4Address(base + off)
                if addr in RESERVED_V4 or str(addr) in used:
                    continue
                self._next4 = off + 1
                return str(addr)
        raise AddressPoolExhaustedError(str(self.v4))

    def _alloc6(self, used: Container[str]) -> str:
        base = int(self.v6.network_address)
        size = self.v6.num_addresses
        for start in (self._next6, 1):
            for off in range(start, min(size, start + 1_000_000)):
                addr = str(ipaddress.IPv6Address(base + off))
                if addr not in used:
                    self._next6 = off + 1
                    return addr
        raise AddressPoolExhaustedError(str(self.v6))
