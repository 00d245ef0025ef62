"""What the real node changes on the machine, recorded before it starts and put back after.

The kubelet, kube-proxy, containerd and the CNI plugins change host settings: kernel parameters
(kernel.panic, vm.overcommit_memory, ip_forward...), netfilter tables and chains, network
interfaces and namespaces, mounts and cgroups. :func:`snapshot` records all of these;
:func:`restore` undoes what differs from a snapshot, touching only what was not there before (never
a table, chain, interface or mount that existed), and :func:`differences` says what still differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Every kernel parameter the kubelet, kube-proxy or the CNI bridge plugin may write.
SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))


def _run(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value + "\n")


def nft_tables() -> set[str]:
    """``"family name"`` of every nftables table (iptables-nft's tables included)."""
    data = json.loads(_run("nft", "-j", "list", "tables") or '{"nftables": []}')
    return {
        f"{item['table']['family']} {item['table']['name']}"
        for item in data["nftables"]
        if "table" in item
    }


def nft_chains() -> set[str]:
    """``"family table chain"`` of every chain."""
    data = json.loads(_run("nft", "-j", "list", "chains") or '{"nftables": []}')
    return {
        f"{item['chain']['family']} {item['chain']['table']} {item['chain']['name']}"
        for item in data["nftables"]
        if "chain" in item
    }


def links() -> set[str]:
    return {item["ifname"] for item in json.loads(_run("ip", "-j", "link", "show") or "[]")}


def mounts() -> list[str]:
    """Mount points, in mount order (so the last ones are unmounted first)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4].encode().decode("unicode_escape") for line in lines]


def netns_files() -> set[str]:
    return {str(path) for folder in NETNS_DIRS if folder.is_dir() for path in folder.iterdir()}


def cgroups(names: tuple[str, ...]) -> set[str]:
    """The cgroup folders named ``names`` (and all below them) under every hierarchy."""
    found: set[str] = set()
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        for name in names:
            top = hierarchy / name
            if top.is_dir():
                found.update(str(path) for path, _, _ in os.walk(top))
    return found


@dataclass
class HostState:
    sysctls: dict[str, str | None]
    tables: set[str]
    chains: set[str]
    links: set[str]
    mounts: list[str]
    netns: set[str]
    cgroups: set[str]
    paths: dict[str, bool] = field(default_factory=dict)
    """Whether each watched path existed (e.g. /var/lib/cni, the CNI result cache)."""


WATCHED_PATHS = (
    "/var/lib/cni",
    "/etc/cni",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/log/pods",
    "/var/log/containers",
)


def snapshot(cgroup_names: tuple[str, ...]) -> HostState:
    return HostState(
        sysctls={name: read_sysctl(name) for name in SYSCTLS},
        tables=nft_tables(),
        chains=nft_chains(),
        links=links(),
        mounts=mounts(),
        netns=netns_files(),
        cgroups=cgroups(cgroup_names),
        paths={path: os.path.lexists(path) for path in WATCHED_PATHS},
    )


def _unmount(path: str) -> None:
    _run("umount", "--lazy", path, check=False)


# What the node's programs create; nothing else is ever removed (other work shares the machine).
OUR_TABLES = {"inet mcop-guard", "ip kube-proxy", "ip6 kube-proxy"}
IPTABLES_TABLES = {
    f"{family} {name}" for family in ("ip", "ip6") for name in ("filter", "nat", "mangle")
}
OUR_LINK_PREFIXES = ("mcop", "veth")
OUR_CHAIN_PREFIX = "KUBE-"


def restore(before: HostState, cgroup_names: tuple[str, ...], owned_dirs: tuple[Path, ...]) -> None:
    """Puts back what differs from ``before``: sysctls are rewritten; of what was created since,
    only what the node's programs create is removed (mounts under ``owned_dirs`` and network
    namespaces, ``mcop*``/``veth*`` interfaces, our netfilter tables and KUBE-* chains, cgroups
    named ``cgroup_names``)."""
    for name, value in before.sysctls.items():
        if value is not None and read_sysctl(name) != value:
            write_sysctl(name, value)
    # Mounts made since (container root filesystems, pod volumes, network namespaces): newest first.
    known = set(before.mounts)
    roots = tuple(str(folder) + "/" for folder in owned_dirs) + tuple(
        str(folder) + "/" for folder in NETNS_DIRS
    )
    for point in reversed(mounts()):
        if point not in known and (point + "/").startswith(roots):
            _unmount(point)
    for path in netns_files() - before.netns:
        with contextlib.suppress(OSError):
            os.unlink(path)
    for name in sorted(links() - before.links):
        if name.startswith(OUR_LINK_PREFIXES):
            _run("ip", "link", "delete", name, check=False)
    # Netfilter: our tables created since go whole; in tables that existed, only the KUBE-* chains
    # created since (the kubelet's, in iptables-nft's tables) are flushed and deleted.
    for table in sorted(nft_tables() - before.tables):
        if table in OUR_TABLES or table in IPTABLES_TABLES:
            family, name = table.split()
            _run("nft", "delete", "table", family, name, check=False)
    new_chains = sorted(
        chain
        for chain in nft_chains() - before.chains
        if " ".join(chain.split()[:2]) in before.tables
        and chain.split()[2].startswith(OUR_CHAIN_PREFIX)
    )
    for chain in new_chains:
        _run("nft", "flush", "chain", *chain.split(), check=False)
    for chain in new_chains:  # rules of old chains may jump to new ones: flushed first
        _run("nft", "delete", "chain", *chain.split(), check=False)
    # cgroups: the deepest first (a cgroup folder goes with rmdir once its children are gone).
    for path in sorted(cgroups(cgroup_names) - before.cgroups, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(path)
    for path, existed in before.paths.items():
        if not existed and os.path.lexists(path):
            _run("rm", "-rf", "--one-file-system", path, check=False)
    for folder in owned_dirs:
        if folder.exists():
            _run("rm", "-rf", "--one-file-system", str(folder), check=False)


def differences(before: HostState, after: HostState) -> list[str]:
    """What differs between two snapshots, one line each (empty: the machine is as it was).

    Mounts are compared under the network-namespace folders and folders whose name has ``mcop``
    only: other work on the machine may mount and unmount its own things meanwhile."""
    found = [
        f"sysctl {name}: {value!r} -> {after.sysctls.get(name)!r}"
        for name, value in before.sysctls.items()
        if after.sysctls.get(name) != value
    ]
    for what in ("tables", "chains", "links", "netns", "cgroups"):
        old, new = getattr(before, what), getattr(after, what)
        found += [f"{what}: added {item}" for item in sorted(new - old)]
        found += [f"{what}: removed {item}" for item in sorted(old - new)]

    def ours(point: str) -> bool:
        return "mcop" in point or point.startswith(tuple(str(d) for d in NETNS_DIRS))

    old_mounts = {p for p in before.mounts if ours(p)}
    new_mounts = {p for p in after.mounts if ours(p)}
    found += [f"mount added {point}" for point in sorted(new_mounts - old_mounts)]
    found += [f"mount removed {point}" for point in sorted(old_mounts - new_mounts)]
    found += [
        f"path {path}: existed {existed} -> {after.paths.get(path)}"
        for path, existed in before.paths.items()
        if after.paths.get(path) != existed
    ]
    return found
