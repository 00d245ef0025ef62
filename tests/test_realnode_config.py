"""The real node's configuration and helpers, without starting it (fast): containerd, kubelet and
kube-proxy settings the issue requires, the traffic guard's rules, the cluster DNS's answers and
the host-state comparison. tests/test_realnode.py runs the node itself."""

from __future__ import annotations

import struct
import tomllib
from pathlib import Path

import yaml

from mcop_devcluster import clusterdns, hoststate, netguard
from mcop_devcluster.realnode import (
    NO_REGISTRY,
    NODE_ADDRESS,
    POD_BRIDGE,
    SANDBOX_IMAGE,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    registry_hosts,
)

CRI = 'plugins."io.containerd.grpc.v1.cri"'


def test_containerd_keeps_everything_in_the_node_folder_and_never_pulls(tmp_path: Path) -> None:
    config = tomllib.loads(containerd_config(tmp_path))
    assert config["root"].startswith(str(tmp_path)) and config["state"].startswith(str(tmp_path))
    assert config["grpc"]["address"].startswith(str(tmp_path))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == SANDBOX_IMAGE
    assert cri["stream_server_address"] == "127.0.0.1"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(tmp_path))
    assert cri["cni"]["conf_dir"].startswith(str(tmp_path))
    hosts_dir = Path(cri["registry"]["config_path"])
    registry_hosts(tmp_path)
    for name in ("_default", "docker.io", "localhost"):
        hosts = tomllib.loads((hosts_dir / name / "hosts.toml").read_text())
        assert hosts["server"] == NO_REGISTRY == "https://127.0.0.1:9"
        assert list(hosts["host"]) == [NO_REGISTRY]


def test_kubelet_runs_on_cgroup_v1_with_cgroupfs_and_collects_no_images(tmp_path: Path) -> None:
    config = yaml.safe_load(kubelet_config(tmp_path, tmp_path / "ca.crt", 10250, 10248))
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/mcop-node"
    assert config["address"] == NODE_ADDRESS and config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0 and config["authentication"]["anonymous"]["enabled"] is False
    assert config["imageGCHighThresholdPercent"] == 100
    for key in ("podLogsDir", "volumePluginDir", "resolvConf"):
        assert config[key].startswith(str(tmp_path)), key


def test_kube_proxy_uses_nftables_and_leaves_conntrack_alone(tmp_path: Path) -> None:
    config = yaml.safe_load(kube_proxy_config(tmp_path / "kubeconfig", 1, 2))
    assert config["mode"] == "nftables"
    assert config["nodePortAddresses"] == [f"{NODE_ADDRESS}/32"]
    assert config["healthzBindAddress"].startswith("127.0.0.1:")
    assert config["metricsBindAddress"].startswith("127.0.0.1:")
    assert all(v in (0, "0s") for v in config["conntrack"].values())


def test_pods_get_no_address_translation_to_the_outside(tmp_path: Path) -> None:
    import json

    bridge = json.loads(cni_config(tmp_path))["plugins"][0]
    assert bridge["bridge"] == POD_BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_the_guard_drops_pod_and_service_traffic_by_any_other_way_out() -> None:
    rules = netguard.ruleset(netguard.GuardNetworks("10.244.0.0/24", "10.0.0.0/24", "br9"))
    assert 'ip saddr 10.244.0.0/24 oifname != "br9" counter drop' in rules
    assert "ip daddr 10.0.0.0/24 counter drop" in rules
    assert 'meta nfproto ipv6 iifname "br9" counter drop' in rules
    # Its own table only: created, replaced whole, nothing else named.
    assert rules.count("table inet mcop-guard") == 3
    assert "flush ruleset" not in rules


def _query(name: str, qtype: int = clusterdns.TYPE_A) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def test_cluster_dns_answers_service_names_and_nothing_else() -> None:
    records = {"montecarlo-redis.ns.svc.cluster.local": "10.0.0.7"}
    reply = clusterdns.answer(_query("montecarlo-redis.ns.svc.cluster.local"), records)
    assert reply is not None
    ident, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
    assert ident == 9 and flags & 0xF == clusterdns.NOERROR and ancount == 1
    assert reply.endswith(bytes([10, 0, 0, 7]))
    missing = clusterdns.answer(_query("example.org"), records)
    assert missing is not None and struct.unpack("!H", missing[2:4])[0] & 0xF == clusterdns.NXDOMAIN
    aaaa = clusterdns.answer(_query("montecarlo-redis.ns.svc.cluster.local", 28), records)
    assert aaaa is not None and struct.unpack("!H", aaaa[6:8])[0] == 0  # no answer, no error
    assert clusterdns.answer(b"\0\1", records) is None


def test_host_state_differences_name_what_changed() -> None:
    before = hoststate.HostState(
        sysctls={"kernel/panic": "0"}, tables={"ip filter"}, chains=set(), links={"lo"},
        mounts=["/"], netns=set(), cgroups=set(), paths={"/var/lib/cni": False},
    )  # fmt: skip
    after = hoststate.HostState(
        sysctls={"kernel/panic": "10"}, tables={"ip filter", "inet mcop-guard"}, chains=set(),
        links={"lo", "mcopcni0"}, mounts=["/", "/tmp/mcop-kube-x/node/kubelet/pods/v"],
        netns={"/run/netns/cni-1"}, cgroups={"/sys/fs/cgroup/memory/mcop-node"},
        paths={"/var/lib/cni": True},
    )  # fmt: skip
    found = hoststate.differences(before, after)
    assert "sysctl kernel/panic: '0' -> '10'" in found
    assert "tables: added inet mcop-guard" in found
    assert "links: added mcopcni0" in found
    assert "netns: added /run/netns/cni-1" in found
    assert "cgroups: added /sys/fs/cgroup/memory/mcop-node" in found
    assert "mount added /tmp/mcop-kube-x/node/kubelet/pods/v" in found
    assert "path /var/lib/cni: existed False -> True" in found
    assert hoststate.differences(before, before) == []
