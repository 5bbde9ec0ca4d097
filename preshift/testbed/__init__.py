"""Local testbed: Docker engines in network namespaces, optional Swarm, a real Prometheus.

See docs/testbed.md. Needs root; everything it creates carries the spec's prefix.
"""

from __future__ import annotations

from .image import build_rootfs_tar
from .spec import IMAGE, NodeSpec, TestbedSpec
from .testbed import Testbed

__all__ = ["IMAGE", "NodeSpec", "Testbed", "TestbedSpec", "build_rootfs_tar"]
