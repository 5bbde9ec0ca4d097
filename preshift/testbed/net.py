"""The testbed network: one bridge in the root namespace, one netns + veth per node.

Each node netns has an address on the bridge and NO default route, so nothing a node does
(registry lookups, DNS) can leave the machine: it fails at once with ENETUNREACH.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ..errors import TestbedError
from .procs import run
from .spec import NodeSpec, TestbedSpec

NETNS_DIR = Path("/run/netns")


def _links() -> list[dict]:
    return json.loads(run(["ip", "-j", "-d", "link", "show"]).stdout or "[]")


def _netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _forward_rules(spec: TestbedSpec) -> list[str]:
    """Our FORWARD rules, as `iptables -S` prints them (identified by their comment)."""
    out = run(["iptables", "-w", "5", "-S", "FORWARD"]).stdout
    return [ln for ln in out.splitlines() if spec.iptables_comment in shlex.split(ln)]


def check_subnet_free(spec: TestbedSpec) -> None:
    """Refuse a subnet another interface already uses: two bridges on one /24 break routing."""
    addrs = json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("local", "").startswith(spec.subnet + ".") and link["ifname"] != spec.bridge:
                raise TestbedError(
                    f"subnet {spec.subnet}.0/24 is already used by interface {link['ifname']} "
                    f"({a['local']}); choose another subnet (--subnet) for prefix {spec.prefix!r}"
                )


def create_bridge(spec: TestbedSpec) -> None:
    br = spec.bridge
    run(["ip", "link", "add", br, "type", "bridge"])
    run(["ip", "addr", "add", f"{spec.bridge_address}/24", "dev", br])
    run(["ip", "link", "set", br, "up"])
    # bridge-nf-call-iptables sends bridged frames through FORWARD; a dockerd in the root ns
    # sets its policy to DROP, which silently drops node-to-node traffic without this rule.
    run(["iptables", "-w", "5", "-I", "FORWARD", "1", "-i", br, "-o", br,
         "-m", "comment", "--comment", spec.iptables_comment, "-j", "ACCEPT"])


def create_node_net(spec: TestbedSpec, node: NodeSpec) -> None:
    ns = node.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", node.veth, "master", spec.bridge, "up"])
    run(["ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def set_link(node: NodeSpec, up: bool) -> None:
    """Take the node's cable out (down) or plug it back in (up), on the root-ns side."""
    run(["ip", "link", "set", node.veth, "up" if up else "down"])


def link_up(node: NodeSpec) -> bool:
    out = run(["ip", "-j", "link", "show", node.veth], check=False)
    if out.returncode != 0:
        return False
    return "UP" in json.loads(out.stdout or "[{}]")[0].get("flags", [])


def leftovers(spec: TestbedSpec) -> list[str]:
    """Network objects of this prefix that still exist."""
    found = [f"netns {n}" for n in _netns_names() if spec.netns_re.match(n)]
    for link in _links():
        name = link.get("ifname", "")
        if name == spec.bridge or spec.veth_re.match(name):
            found.append(f"link {name}")
    found += [f"iptables rule {r}" for r in _forward_rules(spec)]
    return found


def delete_all(spec: TestbedSpec) -> None:
    """Delete every network object of this prefix, whatever run (or crash) created it."""
    for link in _links():
        name = link.get("ifname", "")
        kind = link.get("linkinfo", {}).get("info_kind")
        # Delete the veths explicitly: netns deletion frees them asynchronously.
        if spec.veth_re.match(name) and kind == "veth":
            run(["ip", "link", "del", name], check=False)
    for ns in _netns_names():
        if spec.netns_re.match(ns):
            run(["ip", "netns", "del", ns], check=False)
    if any(link.get("ifname") == spec.bridge for link in _links()):
        run(["ip", "link", "del", spec.bridge], check=False)
    for rule in _forward_rules(spec):
        args = shlex.split(rule)
        if args[:1] == ["-A"]:
            run(["iptables", "-w", "5", "-D", *args[1:]], check=False)
