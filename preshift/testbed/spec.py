"""What a testbed looks like: a frozen spec, and every name and path derived from it.

All names carry the prefix, so two testbeds with different prefixes (and subnets) can run
side by side. Interface names stay within the kernel's 15-character limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TestbedError

IMAGE = "preshift-box:latest"
LABEL_PREFIX = "preshift"
#: Engine labels copied to swarm node labels (preshift.node stays engine-only).
SWARM_LABEL_KEYS = ("rack", "site", "host")

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_ADDR_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
MAX_NODES = 50


@dataclass(frozen=True)
class NodeSpec:
    """One Docker engine 'node': its names, address, failure domains and paths."""

    index: int
    name: str
    host: str
    rack: str
    site: str
    address: str
    netns: str
    veth: str
    cgroup_parent: str
    data_dir: Path
    run_dir: Path

    @property
    def hostname(self) -> str:
        """UTS hostname of the engine (and so its swarm node hostname): the node name."""
        return self.name

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def labels(self) -> dict[str, str]:
        """Engine labels, e.g. {'preshift.node': 'n1', 'preshift.rack': 'r1', ...}."""
        return {
            f"{LABEL_PREFIX}.node": self.name,
            f"{LABEL_PREFIX}.host": self.host,
            f"{LABEL_PREFIX}.rack": self.rack,
            f"{LABEL_PREFIX}.site": self.site,
        }

    # dockerd
    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def data_root(self) -> Path:
        return self.data_dir / "docker"

    @property
    def daemon_json(self) -> Path:
        """dockerd's --config-file; its path in the cmdline marks the process as ours."""
        return self.data_dir / "daemon.json"

    # containerd
    @property
    def containerd_dir(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_config(self) -> Path:
        """containerd's --config; its path in the cmdline marks the process as ours."""
        return self.containerd_dir / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.data_dir / "containerd"


@dataclass(frozen=True)
class TestbedSpec:
    """Shape of a testbed. Node i gets address f"{subnet}.{10+i}" on bridge f"{subnet}.1/24"."""

    __test__ = False  # not a pytest test class

    prefix: str = "ps"
    nodes: int = 3
    subnet: str = "198.18.7"
    base_dir: Path = Path("/var/lib/preshift-testbed")
    run_dir: Path = Path("/run/preshift-testbed")
    swarm: bool = False
    prometheus: bool = True
    prometheus_port: int = 19090
    exporter_address: str = "127.0.0.1:9731"
    simulator_address: str = "127.0.0.1:9732"
    rule_files: tuple[Path, ...] = field(default=())
    #: Where the testbed's Alertmanager listens (127.0.0.1); Prometheus sends alerts there.
    alertmanager_port: int | None = None
    #: More scrape jobs for the testbed's Prometheus: (job name, loopback HOST:PORT), e.g. the
    #: webhook ("preshift-webhook", "127.0.0.1:9733") or HAProxy's stats frontend.
    extra_scrape: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        if not _PREFIX_RE.match(self.prefix):
            problems.append(
                f"prefix {self.prefix!r}: use 1-8 lowercase letters/digits starting with a letter"
            )
        if not 1 <= self.nodes <= MAX_NODES:
            problems.append(f"nodes {self.nodes}: use 1..{MAX_NODES}")
        m = _ADDR_RE.match(self.subnet)
        if not m or any(int(o) > 255 for o in m.groups()):
            problems.append(f"subnet {self.subnet!r}: give the first three octets, e.g. 198.18.7")
        if not 1024 <= self.prometheus_port <= 65535:
            problems.append(f"prometheus_port {self.prometheus_port}: use 1024..65535")
        if self.alertmanager_port is not None and not 1024 <= self.alertmanager_port <= 65535:
            problems.append(f"alertmanager_port {self.alertmanager_port}: use 1024..65535")
        for job, target in self.extra_scrape:
            if not re.match(r"^[a-z][a-z0-9_-]{0,40}$", job) or not target.startswith("127."):
                problems.append(f"extra_scrape ({job!r}, {target!r}): use a job name and a "
                                "loopback 127.x.y.z:PORT")
        for name in ("exporter_address", "simulator_address"):
            host, sep, port = getattr(self, name).rpartition(":")
            if not sep or not host or not port.isdigit():
                problems.append(f"{name} {getattr(self, name)!r}: use HOST:PORT")
        if problems:
            raise TestbedError("invalid testbed spec: " + "; ".join(problems))
        # Normalise so equal specs compare equal whatever the caller passed (str, list).
        object.__setattr__(self, "base_dir", Path(self.base_dir))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "rule_files", tuple(Path(p) for p in self.rule_files))
        object.__setattr__(self, "extra_scrape", tuple((str(j), str(t))
                                                       for j, t in self.extra_scrape))

    # per-prefix locations
    @property
    def root(self) -> Path:
        """Persistent files of this testbed (data-roots, logs, Prometheus TSDB)."""
        return self.base_dir / self.prefix

    @property
    def run(self) -> Path:
        """Runtime files (sockets, pidfiles, exec-roots, state file)."""
        return self.run_dir / self.prefix

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    @property
    def image_tar(self) -> Path:
        return self.root / "preshift-box.tar"

    # network
    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    @property
    def bridge_address(self) -> str:
        return f"{self.subnet}.1"

    @property
    def iptables_comment(self) -> str:
        return f"preshift-testbed:{self.prefix}"

    @property
    def netns_re(self) -> re.Pattern[str]:
        return re.compile(rf"^{self.prefix}-n\d+$")

    @property
    def veth_re(self) -> re.Pattern[str]:
        return re.compile(rf"^{self.prefix}v\d+$")

    @property
    def cgroup_re(self) -> re.Pattern[str]:
        return re.compile(rf"^preshift-{self.prefix}-n\d+$")

    # Prometheus
    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def prometheus_config(self) -> Path:
        """Prometheus' --config.file; its path in the cmdline marks the process as ours."""
        return self.prometheus_dir / "prometheus.yml"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    # HAProxy and Alertmanager (test equipment, started on demand)
    @property
    def haproxy_dir(self) -> Path:
        return self.root / "haproxy"

    @property
    def haproxy_config(self) -> Path:
        """HAProxy's -f file; its path in the cmdline marks the process as ours."""
        return self.haproxy_dir / "haproxy.cfg"

    @property
    def haproxy_socket(self) -> Path:
        return self.run / "haproxy.sock"

    @property
    def alertmanager_dir(self) -> Path:
        return self.root / "alertmanager"

    @property
    def alertmanager_config(self) -> Path:
        """Alertmanager's --config.file; its path in the cmdline marks the process as ours."""
        return self.alertmanager_dir / "alertmanager.yml"

    @property
    def alertmanager_url(self) -> str | None:
        if self.alertmanager_port is None:
            return None
        return f"http://127.0.0.1:{self.alertmanager_port}"

    # nodes
    def node(self, index: int) -> NodeSpec:
        """Node `index` (1-based): rack r{i}, site dc{ceil(i/2)}, host = node name."""
        name = f"n{index}"
        return NodeSpec(
            index=index,
            name=name,
            host=name,
            rack=f"r{index}",
            site=f"dc{math.ceil(index / 2)}",
            address=f"{self.subnet}.{10 + index}",
            netns=f"{self.prefix}-n{index}",
            veth=f"{self.prefix}v{index}",
            cgroup_parent=f"/preshift-{self.prefix}-n{index}",
            data_dir=self.root / name,
            run_dir=self.run / name,
        )

    @property
    def node_specs(self) -> tuple[NodeSpec, ...]:
        return tuple(self.node(i) for i in range(1, self.nodes + 1))

    def to_json(self) -> dict[str, object]:
        """JSON-friendly form, stored in the state file so `status`/`down` can find it."""
        return {
            "prefix": self.prefix,
            "nodes": self.nodes,
            "subnet": self.subnet,
            "base_dir": str(self.base_dir),
            "run_dir": str(self.run_dir),
            "swarm": self.swarm,
            "prometheus": self.prometheus,
            "prometheus_port": self.prometheus_port,
            "exporter_address": self.exporter_address,
            "simulator_address": self.simulator_address,
            "rule_files": [str(p) for p in self.rule_files],
            "alertmanager_port": self.alertmanager_port,
            "extra_scrape": [list(x) for x in self.extra_scrape],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TestbedSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]
