"""Faults around a migration, with fakes: the target node's engine stops answering in each
phase. The migration must give traffic back to the original without that engine, and keep
the obligation to remove the canary until the engine answers again (never FAILED with an
orphan left behind). The source node's engine stopping (the failure Preshift moves away
from) must not freeze the migration: the canary takes over and the original is removed once
its engine answers. The real-engine version is tests/integration/test_faults.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from preshift.act.phases import Phase
from preshift.errors import ActionError, SourceError

from .act_fakes import Harness, World

P = Phase


class EngineDown(World):
    """A World whose nodes in `down` do not answer (like a stopped dockerd: its containers
    were stopped with it and are still there when it comes back)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.down: set[str] = set()

    def stop_engine(self, node: str) -> None:
        self.down.add(node)
        for (n, _), box in self.boxes.items():
            if n == node:
                box.state = "exited"

    def _refuse(self, node: str, what: str, *, reading: bool) -> None:
        if node in self.down:
            if reading:
                raise SourceError(f"docker engine {node}", f"{what}: connection refused")
            raise ActionError(f"{what} on node {node}: connection refused", retriable=True)

    def inspect(self, node: str, name: str) -> Any:
        self._refuse(node, f"inspect {name}", reading=True)
        return super().inspect(node, name)

    def probe(self, instance: Any) -> Any:
        self._refuse(instance.node, f"probe {instance.name}", reading=True)
        return super().probe(instance)

    def clone(self, source: Any, node: str, name: str, labels: Any) -> Any:
        self._refuse(node, f"clone {name}", reading=False)
        # like DockerRuntime.clone: the source container (and its image) is read there
        self._refuse(source.node, f"clone {name}", reading=False)
        return super().clone(source, node, name, labels)

    def start(self, node: str, name: str, restart_policy: str | None = None) -> Any:
        self._refuse(node, f"start {name}", reading=False)
        return super().start(node, name, restart_policy)

    def standby(self, node: str, name: str, labels: Any) -> None:
        self._refuse(node, f"standby {name}", reading=False)
        super().standby(node, name, labels)

    def remove(self, node: str, name: str) -> None:
        self._refuse(node, f"remove {name}", reading=False)
        super().remove(node, name)


def harness(path: Path) -> Harness:
    h = Harness(path)
    world = EngineDown(h.world.min_available)
    world.boxes, world.backends = h.world.boxes, h.world.backends
    h.world = world
    h.ex.runtime = h.ex.traffic = world
    return h


#: Phases of a move the canary's engine can stop in, and where the migration then goes.
CASES = [(P.STARTING, P.ROLLING_BACK), (P.HEALTH_CHECK, P.ROLLING_BACK),
         (P.ROUTING, P.ROLLING_BACK), (P.SHIFTING, P.ROLLING_BACK),
         (P.PROMOTED, P.ROLLING_BACK), (P.DRAINING, P.ROLLING_BACK),
         (P.STANDBY, P.RESTORING)]


@pytest.mark.parametrize(("phase", "back"), CASES)
def test_target_engine_down_rolls_back_and_removes_the_canary_once_back(
        tmp_path: Path, phase: Phase, back: Phase) -> None:
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    m = h.run(until=lambda m: m.phase == phase)
    world: EngineDown = h.world  # type: ignore[assignment]
    world.stop_engine("n2")
    deadline = h.config.migration.progress_deadline
    # Down for far longer than every deadline: the rollback must not give up (FAILED)
    # and leave the canary behind; traffic must be the original's meanwhile.
    for _ in range(int(deadline * 6)):
        h.tick()
    m = h.m()
    assert m.phase == back if phase != P.STARTING else m.phase == P.ROLLING_BACK, m
    assert m.data.get("cleanup"), m.data
    assert {n: s.weight for n, s in world.backends["be_web"].items()} == {"web-1": 100}
    assert world.boxes[("n1", "web-1")].state == "running"
    world.down.clear()
    m = h.run()
    assert m.phase == P.ROLLED_BACK, m
    assert set(world.boxes) == {("n1", "web-1")}
    assert {n: s.weight for n, s in world.backends["be_web"].items()} == {"web-1": 100}
    assert not world.violations and not h.events.bad
    assert not h.journal.open_steps(m.id)


def test_target_engine_blip_while_starting_only_delays(tmp_path: Path) -> None:
    """Shorter than the deadline, an unreachable target while starting is a retry."""
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == P.STARTING)
    world: EngineDown = h.world  # type: ignore[assignment]
    world.down.add("n2")
    for _ in range(3):
        h.tick()
    assert h.m().phase == P.STARTING and "unreachable" in (h.m().error or "")
    world.down.clear()
    assert h.run().phase == P.SUCCEEDED


def test_target_engine_down_while_decommissioning_still_succeeds(tmp_path: Path) -> None:
    """Once the standby's removal has begun, the canary's engine is not needed for it."""
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == P.STANDBY and bool(m.data.get("decommission")))
    world: EngineDown = h.world  # type: ignore[assignment]
    world.down.add("n2")
    m = h.run()
    assert m.phase == P.SUCCEEDED, m
    assert ("n1", "web-1") not in world.boxes


@pytest.mark.parametrize("retry", [False, True])
def test_testbed_haproxy_retry_option_is_valid_and_default_unchanged(
        tmp_path: Path, retry: bool) -> None:
    """The fault tests' production-like retries are an option; the default stays
    `retries 0` (losses visible). HAProxy itself checks both configurations."""
    import shutil
    import subprocess

    from preshift.testbed.haproxy import HAPROXY, RETRY_LINES, Backend, haproxy_config
    from preshift.testbed.spec import TestbedSpec

    binary = str(HAPROXY) if HAPROXY.exists() else shutil.which("haproxy")
    assert binary, "missing: haproxy (apt-get install haproxy)"
    spec = TestbedSpec(prefix="rfu", subnet="198.18.19", run_dir=tmp_path)
    text = haproxy_config(spec, [Backend("be_web", "127.0.0.1:20427", (
        ("web-n1", "198.18.18.11", 8080, 100),))], None, retry=retry)
    lines = text.splitlines()
    assert all(x in lines for x in RETRY_LINES) is retry
    assert any(x.startswith("    retries 0") for x in lines) is not retry
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    r = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


#: The original's engine stopping (the risky node failing, what Preshift moves away from).
FORWARD = [P.HEALTH_CHECK, P.ROUTING, P.SHIFTING, P.PROMOTED, P.DRAINING, P.STANDBY]


@pytest.mark.parametrize("phase", FORWARD)
def test_source_engine_down_the_canary_takes_over_and_the_original_goes_once_back(
        tmp_path: Path, phase: Phase) -> None:
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == phase)
    world: EngineDown = h.world  # type: ignore[assignment]
    world.stop_engine("n1")
    for _ in range(int(h.config.migration.progress_deadline * 6)):
        h.tick()
    m = h.m()
    # Not frozen, not rolled back onto a dead original: promoted, and the original's
    # removal kept (it would start again with its engine) without holding a slot.
    assert m.phase == P.STANDBY and m.data.get("cleanup") and m.data.get("decommission"), m
    assert "web-1 on n1 is removed once its engine answers" in (m.error or "")
    canary = world.boxes[("n2", m.canary_name)]
    assert canary.state == "running"
    assert set(world.backends["be_web"]) == {m.canary_name}
    world.down.clear()
    m = h.run()
    assert m.phase == P.SUCCEEDED, m
    assert set(world.boxes) == {("n2", m.canary_name)}
    assert not h.events.bad and not h.journal.open_steps(m.id)


def test_source_engine_down_while_planned_cancels(tmp_path: Path) -> None:
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    h.ex.take_notifications()
    assert h.m().phase == P.PLANNED
    world: EngineDown = h.world  # type: ignore[assignment]
    world.stop_engine("n1")
    m = h.run()
    assert m.phase == P.CANCELLED and "engine of n1 is unreachable" in m.reason, m
    assert set(world.boxes) == {("n1", "web-1")} and not world.mutations()


def test_source_engine_down_while_starting_before_the_clone_cancels(tmp_path: Path) -> None:
    """The clone cannot read the original: cancelled, saying why (not "no running replica":
    the component's other replicas may well run)."""
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == P.STARTING)
    world: EngineDown = h.world  # type: ignore[assignment]
    world.stop_engine("n1")
    m = h.run()
    assert m.phase == P.CANCELLED and "engine of n1 is unreachable" in m.reason, m
    assert set(world.boxes) == {("n1", "web-1")}
    assert not h.journal.open_steps(m.id)


def test_source_engine_down_on_the_way_back_fails_naming_it(tmp_path: Path) -> None:
    """Rolling back needs the original: with its engine unreachable the canary is kept
    serving and a human is called, told why (not "gone")."""
    h = harness(tmp_path / "j.sqlite3")
    h.fire()
    m = h.run(until=lambda m: m.phase == P.SHIFTING)
    world: EngineDown = h.world  # type: ignore[assignment]
    h.journal.request(m.id, "rollback")
    world.stop_engine("n1")
    m = h.run()
    assert m.phase == P.FAILED and "engine of n1 is unreachable" in m.reason, m
    assert world.boxes[("n2", m.canary_name)].state == "running"
