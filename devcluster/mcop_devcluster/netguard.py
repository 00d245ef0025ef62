"""The real node's traffic guard: an nftables table of ours that keeps pod traffic on this machine.

Installed before the first pod starts, removed last. It drops, and counts:
- a packet from the pod network that the machine would send anywhere but the pods' bridge
  (forwarded) — the internet, the machine's own network;
- a packet to the service range that no kube-proxy rule translated (a ClusterIP without rules is
  otherwise routed to the default gateway), whether a pod or the machine sends it;
- a packet to the pod network that would leave by another interface than the pods' bridge;
- any IPv6 packet forwarded from the pods' bridge (the pod network is IPv4 only).
Only this table is ever created or deleted here; no other ruleset is touched.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

TABLE = "mcop-guard"
FAMILY = "inet"


@dataclass(frozen=True)
class GuardNetworks:
    pod_cidr: str
    service_cidr: str
    pod_bridge: str


def ruleset(networks: GuardNetworks) -> str:
    """The table, as an ``nft -f`` script (the table is created, then replaced whole)."""
    pods, services, bridge = networks.pod_cidr, networks.service_cidr, networks.pod_bridge
    return f"""
table {FAMILY} {TABLE} {{}}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    ip saddr {pods} oifname != "{bridge}" counter drop comment "pod-leaves"
    ip daddr {services} counter drop comment "service-untranslated"
    ip daddr {pods} oifname != "{bridge}" counter drop comment "to-pods-elsewhere"
    meta nfproto ipv6 iifname "{bridge}" counter drop comment "pod-ipv6"
  }}
  chain output {{
    type filter hook output priority filter - 10; policy accept;
    ip daddr {services} counter drop comment "service-untranslated"
    ip daddr {pods} oifname != "{bridge}" counter drop comment "to-pods-elsewhere"
  }}
  chain postrouting {{
    type filter hook postrouting priority filter - 10; policy accept;
    ip saddr {pods} oifname != {{ "{bridge}", "lo" }} counter drop comment "pod-leaves"
  }}
}}
"""


def install(networks: GuardNetworks) -> None:
    subprocess.run(
        ["nft", "-f", "-"], input=ruleset(networks), text=True, check=True, capture_output=True
    )


def remove() -> None:
    subprocess.run(["nft", "delete", "table", FAMILY, TABLE], capture_output=True, check=False)


def installed() -> bool:
    result = subprocess.run(
        ["nft", "list", "table", FAMILY, TABLE], capture_output=True, check=False
    )
    return result.returncode == 0


def counters() -> dict[str, int]:
    """Packets dropped so far, by ``<chain>/<comment>``."""
    result = subprocess.run(
        ["nft", "-j", "list", "table", FAMILY, TABLE], capture_output=True, text=True, check=True
    )
    found: dict[str, int] = {}
    for item in json.loads(result.stdout)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        found[f"{rule['chain']}/{rule.get('comment', '?')}"] = packets
    return found
