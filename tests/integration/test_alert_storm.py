"""Issue 7, part 4: an alert storm. Every part real: 3 private Docker engines (testbed `rt`),
the telemetry simulator heating n2 from the start, Prometheus, the exporter planning a move
off n2 for every service, and the webhook under gunicorn with its 2 workers as shipped.

N services run one tiny container on n1 and one on n2 each. Two Alertmanager peers of an HA
pair send the same >1,000 alerts, grouped differently (their own receiver and groupKey), with
retries and resolved/firing notifications crossing each other, concurrently and bounded.
From the journal and the engines: every notification journaled once and handled once, every
duplicate counted, no 5xx; one migration per service at most; never more in flight than
max_concurrent; exactly max_moves_per_node_per_hour moves off n2 (the rest wait in PLANNED,
within the hour, whatever the cooldown); the admitted ones finish (no traffic layer); the
resolved alerts cancel the waiting ones; nothing is left behind on any engine.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from preshift.act.docker_runtime import DockerRuntime
from preshift.act.journal import Journal
from preshift.act.phases import IN_FLIGHT, TERMINAL
from preshift.config import load_config
from preshift.errors import ActionError
from preshift.testbed import IMAGE, Testbed, TestbedSpec

from .stack import Exporter, Process, Webhook, preshift_argv, wait_for, write_yaml

pytestmark = pytest.mark.integration

PREFIX, SUBNET = "rt", "198.18.20"
WEBHOOK, EXPORTER, SIMULATOR = "127.0.0.1:20480", "127.0.0.1:20481", "127.0.0.1:20482"
PROM_PORT = 20483
TOKEN = "storm-token-7b1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: services (100: 2,007 alerts); a larger run: PRESHIFT_STORM_SERVICES=200 pytest -s …
N = int(os.environ.get("PRESHIFT_STORM_SERVICES", "100"))
ALERTS_PER_SERVICE = 8  # alert instances per service and peer (firing)
OLD = 20  # services that also have an older alert instance, resolved during the storm
MAX_CONCURRENT, MOVES_PER_HOUR = 3, 5
GROUP = 9  # alerts per notification
SLEEP = ["sleep", "86400"]
INFLIGHT = {p.value for p in IN_FLIGHT}
DONE = {p.value for p in TERMINAL}


def svc(i: int) -> str:
    return f"s{i:03d}"


@dataclass
class Storm:
    tb: Testbed
    exporter: Exporter
    webhook: Webhook
    journal: Path
    config_path: Path
    artifacts: Path
    ids: dict[str, str] = field(default_factory=dict)  # container name -> id at the start


def _scenario(path: Path) -> Path:
    """Steady nodes; n2 hot and climbing from the first sample (limit 85 °C)."""
    return write_yaml(path, {
        "seed": 7, "nodes": ["n1", "n2", "n3"],
        "defaults": {"temperature_celsius": {"steady": 50, "noise": 0.3}},
        "overrides": {"n2": {"temperature_celsius": {
            "ramp": {"from": 88, "to": 96, "over": "60s"}, "noise": 0.3}}},
    })


def _config(tb: Testbed, artifacts: Path) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg.update(
        refresh_interval="1s", horizon="60s",
        services={svc(i): {"min_available": 1} for i in range(N)} | {"sx": {}},
        docker={"timeout": "10s"},
        exporter={"listen": EXPORTER},
        webhook={"listen": WEBHOOK, "journal": str(artifacts / "journal.sqlite3"),
                 "exporter_url": f"http://{EXPORTER}", "tick": "0.2s"},
        traffic={"kind": "none"},
        migration={
            "step_weights": [100], "step_interval": "0.3s", "health_timeout": "20s",
            "drain_timeout": "5s", "progress_deadline": "90s", "standby_ttl": "1s",
            "cooldown": "10m", "max_concurrent": MAX_CONCURRENT,
            "max_moves_per_node_per_hour": MOVES_PER_HOUR,
        },
    )
    cfg["prometheus"].update(step="1s", history="10m", timeout="5s")
    return cfg


def _run(tb: Testbed, node: str, name: str, labels: dict[str, str]) -> str:
    c = tb.client(node).containers.run(IMAGE, SLEEP, name=name, detach=True, init=True,
                                       labels=labels)
    return str(c.id)


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storm]:
    artifacts = tmp_path_factory.mktemp("storm")
    spec = TestbedSpec(prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT,
                       exporter_address=EXPORTER, simulator_address=SIMULATOR)
    tb = Testbed(spec)
    procs: list[Process] = []
    tb.up()
    try:
        t0 = time.monotonic()
        jobs = [(node, f"{svc(i)}-{node}", {"preshift.service": svc(i)})
                for i in range(N) for node in ("n1", "n2")]
        jobs += [("n1", "sx-n1", {"preshift.service": "sx"}),
                 ("n2", "sx-n2", {"preshift.service": "sx"}),
                 ("n2", "intruder", {"team": "someone-else"})]  # not Preshift's
        with ThreadPoolExecutor(10) as pool:
            ids = dict(zip([j[1] for j in jobs],
                           pool.map(lambda j: _run(tb, *j), jobs), strict=True))
        print(f"{len(jobs)} containers in {time.monotonic() - t0:.1f}s")
        sim = Process(preshift_argv(
            "simulate", "--scenario", str(_scenario(artifacts / "hot-n2.yaml")),
            "--listen", SIMULATOR, "--nodes", ",".join(n.name for n in tb.nodes),
        ), artifacts / "simulator.log").start()
        procs.append(sim)
        config_path = write_yaml(artifacts / "preshift.yaml", _config(tb, artifacts))
        exporter = Exporter(config_path, EXPORTER, artifacts / "exporter.log").start()
        procs.append(exporter)
        exporter.wait_ready(60)
        webhook = Webhook(config_path, WEBHOOK, artifacts / "webhook.log", token=TOKEN)
        webhook.start()
        procs.append(webhook)
        webhook.wait_ready()

        def planned_off_n2() -> bool:
            entries = exporter.footprint()["plan"]["entries"]
            moving = {e["component"] for e in entries
                      if e["action"] == "move" and e["from_node"] == "n2"}
            return moving >= {svc(i) for i in range(N)} | {"sx"}

        wait_for(planned_off_n2, 90, "the exporter to plan a move off n2 for every service")
        print(f"stack ready and planning after {time.monotonic() - t0:.1f}s")
        yield Storm(tb, exporter, webhook, artifacts / "journal.sqlite3", config_path,
                    artifacts, ids)
    finally:
        for p in reversed(procs):
            p.stop()
        tb.down()


# -- the notifications ---------------------------------------------------------------------


def _alert(component: str, k: int, status: str, starts: str) -> dict[str, Any]:
    fp = hashlib.sha256(f"{component}/{k}".encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": {"alertname": "PreshiftFootprintDiscrepancy", "component": component,
                   "preshift_action": "migrate", "instance": f"exporter-{k}"},
        "annotations": {"summary": f"{component} is not where Preshift wants it"},
        "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z" if status == "firing"
        else "2026-11-28T09:59:00Z", "generatorURL": "", "fingerprint": fp,
    }


def _notification(peer: str, n: int, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4", "groupKey": f'{{}}/{peer}:{{batch="{n}"}}', "truncatedAlerts": 0,
        "status": status, "receiver": f"preshift-{peer}", "groupLabels": {"batch": str(n)},
        "commonLabels": {"alertname": "PreshiftFootprintDiscrepancy"},
        "commonAnnotations": {}, "externalURL": f"http://am-{peer}:9093", "alerts": alerts,
    }


NOW_STARTS = "2026-11-28T10:00:00Z"
OLD_STARTS = "2026-11-28T09:00:00Z"


def _current(status: str = "firing") -> list[dict[str, Any]]:
    return [_alert(svc(i), k, status, NOW_STARTS)
            for i in range(N) for k in range(ALERTS_PER_SERVICE)]


def _old(status: str) -> list[dict[str, Any]]:
    return [_alert(svc(i), 99, status, OLD_STARTS) for i in range(OLD)]


def _batches(peer: str, alerts: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One peer's notifications: its own grouping (shuffled), GROUP alerts each."""
    mine = list(alerts)
    random.Random(seed).shuffle(mine)
    return [_notification(peer, n, mine[i:i + GROUP])
            for n, i in enumerate(range(0, len(mine), GROUP))]


@dataclass
class Sent:
    codes: Counter[int] = field(default_factory=Counter)
    alerts: int = 0
    keys: set[tuple[str, str, str]] = field(default_factory=set)  # status, fp, startsAt
    accepted: int = 0
    duplicates: int = 0


def _send(notes: list[dict[str, Any]], sent: Sent, threads: int = 8) -> None:
    """POST every notification, `threads` at a time, each bounded by a 15 s timeout."""
    def post(note: dict[str, Any]) -> tuple[int, Any]:
        r = requests.post(f"http://{WEBHOOK}/api/v1/alerts", json=note, headers=AUTH,
                          timeout=15)
        return r.status_code, r.json() if r.status_code == 202 else r.text

    with ThreadPoolExecutor(threads) as pool:
        for note, (code, body) in zip(notes, pool.map(post, notes), strict=True):
            sent.codes[code] += 1
            sent.alerts += len(note["alerts"])
            sent.keys.update((a["status"], a["fingerprint"], a["startsAt"])
                             for a in note["alerts"])
            if code == 202:
                sent.accepted += body["accepted"]
                sent.duplicates += body["duplicates"]


class InFlight:
    """Samples the journal (read-only) every 50 ms: the most migrations seen in flight."""

    def __init__(self, journal: Path) -> None:
        self.journal, self.most, self.samples = journal, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InFlight:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        marks = ",".join("?" * len(INFLIGHT))
        try:
            while not self._stop.wait(0.05):
                try:
                    (n,) = db.execute(f"SELECT count(*) FROM migrations WHERE phase IN ({marks})",
                                      tuple(INFLIGHT)).fetchone()
                except sqlite3.OperationalError:
                    continue  # a writer holds it this instant
                self.most, self.samples = max(self.most, n), self.samples + 1
        finally:
            db.close()


def _most_in_flight_from_steps(j: Journal) -> int:
    """Exact, from the journal: a migration is in flight from its start (leaving PLANNED)
    until it goes on standby (its `standby` step done) or finishes."""
    events = []
    for m in j.migrations(limit=10_000):
        start = m.data.get("started_at")
        if start is None:
            continue
        ends = [s.done_at for s in j.steps(m.id) if s.action == "standby" and s.done_at]
        end = min([*ends, *([m.finished_at] if m.finished_at else [])], default=float("inf"))
        events += [(float(start), 1), (float(end), -1)]
    most = cur = 0
    for _, d in sorted(events):  # at equal times an end (-1) sorts before a start
        cur += d
        most = max(most, cur)
    return most


def _metric(name: str) -> dict[str, float]:
    text = requests.get(f"http://{WEBHOOK}/metrics", timeout=5).text
    return {lab: float(v) for lab, v in
            re.findall(rf'^{name}\{{status="(\w+)"\}} (\S+)$', text, re.M)}


def _handlings(outcome: str | None) -> int:
    return sum(1 for part in (outcome or "").split(" | ") if part and
               not part.startswith("reopened after"))


def _containers(tb: Testbed) -> dict[str, tuple[str, str, str, dict[str, str]]]:
    """name -> (node, id, status, labels) on every engine."""
    out = {}
    for n in tb.nodes:
        for c in tb.client(n.name).containers.list(all=True):
            out[c.name] = (n.name, c.id, c.status, c.labels)
    return out


# -- the tests -----------------------------------------------------------------------------


def test_alert_storm_one_migration_per_service_within_the_limits(storm: Storm) -> None:
    t0 = time.monotonic()
    current = _current()
    peer_a = _batches("a", current + _old("firing"), seed=1)
    peer_b = _batches("b", current + _old("firing"), seed=2)
    retries = peer_a[::5] + peer_b[1::6]  # a send that timed out on the peer's side
    notes = peer_a + peer_b + retries
    random.Random(3).shuffle(notes)
    sent = Sent()
    with InFlight(storm.journal) as watch:
        _send(notes, sent)
        # the old instances resolve while their retried firing copies still arrive
        crossing = (_batches("b", _old("resolved"), seed=4) + _batches("a", _old("firing"), 5)
                    + _batches("a", _old("resolved"), seed=6))
        random.Random(7).shuffle(crossing)
        _send(crossing, sent, threads=4)
        storm_seconds = time.monotonic() - t0
        unique = len(sent.keys)
        with Journal(storm.journal) as j:
            wait_for(lambda: j.count_unhandled() == 0, 60, "every notification handled")

            def admitted_done() -> bool:
                ms = j.migrations(limit=10_000)
                started = [m for m in ms if m.data.get("started_at") is not None]
                return len(started) >= MOVES_PER_HOUR and all(m.phase.value in DONE
                                                              for m in started)

            wait_for(admitted_done, 100, "the admitted migrations to finish")
            # a success reopens its alert for the next plan entry: let intake see it again
            wait_for(lambda: j.count_unhandled() == 0, 30, "the reopened alerts handled")
            handled = j.notifications(10_000)
            ms = j.migrations(limit=10_000)
            most = _most_in_flight_from_steps(j)
    took = sorted((m.finished_at or 0) - m.data["started_at"] for m in ms
                  if m.data.get("started_at") is not None)
    print(f"storm: {len(notes) + len(crossing)} notifications, {sent.alerts} alerts "
          f"({unique} unique) in {storm_seconds:.1f}s; codes {dict(sent.codes)}; "
          f"{len(ms)} migrations; in flight at most {most} (journal), {watch.most} "
          f"(sampled {watch.samples}x); started ones took {took[0]:.1f}-{took[-1]:.1f}s; "
          f"done after {time.monotonic() - t0:.1f}s")

    # every notification accepted, journaled once, handled once; every duplicate counted
    assert sent.alerts >= 1000, sent.alerts
    assert dict(sent.codes) == {202: len(notes) + len(crossing)}, sent.codes
    assert sent.accepted == unique == len(handled), (sent.accepted, unique, len(handled))
    assert sent.duplicates == sent.alerts - unique
    dedup = _metric("preshift_webhook_notifications_deduplicated_total")
    assert sum(dedup.values()) == sent.alerts - unique, dedup
    reopened = {n.alert_key for n in handled if "reopened after" in (n.outcome or "")}
    for n in handled:
        want = 2 if n.alert_key in reopened and n.status == "firing" else 1
        assert n.handled_at is not None and _handlings(n.outcome) == want, n

    # one migration per service at most (a second one may only wait, on the cooldown)
    by_service: dict[str, list[Any]] = {}
    for m in ms:
        by_service.setdefault(m.component, []).append(m)
    budget = f"move(s) off n2 in the last hour (max_moves_per_node_per_hour {MOVES_PER_HOUR})"
    for comp, mine in by_service.items():
        moved = [m for m in mine if m.data.get("started_at") is not None]
        planned = [m for m in mine if m.phase.value == "planned"]
        assert len(moved) <= 1 and len(planned) <= 1, (comp, mine)
        assert {m.phase.value for m in mine} <= {"succeeded", "planned", "cancelled"}, mine
        for m in planned:  # waits: after a move only on the cooldown, else on the budget
            why = m.data.get("waiting") or ""
            assert ("cooldown" in why) if moved else (budget in why), (comp, why)
    assert set(by_service) <= {svc(i) for i in range(N)}
    # the limits: exactly the per-node budget moved off n2, never more than max_concurrent
    started = [m for m in ms if m.data.get("started_at") is not None]
    assert len(started) == MOVES_PER_HOUR, [(m.component, m.phase) for m in started]
    assert all(m.source_node == "n2" and m.phase.value == "succeeded" for m in started), \
        [(m.id, m.phase, m.reason, m.error) for m in started]
    assert 1 <= most <= MAX_CONCURRENT and watch.most <= MAX_CONCURRENT, (most, watch.most)
    assert sum(1 for m in ms if m.phase.value == "planned") >= N - OLD - MOVES_PER_HOUR
    # every service that has no migration was refused for a reason the journal gives
    for i in range(N):
        assert svc(i) in by_service or any(
            n.component == svc(i) and "no migration" in (n.outcome or "") for n in handled), i


def test_resolving_everything_cancels_the_waiting_and_leaves_nothing_behind(
        storm: Storm) -> None:
    sent = Sent()
    resolved = _current("resolved") + _old("resolved")
    notes = _batches("a", resolved, 11) + _batches("b", resolved, 12)
    _send(notes, sent)
    assert dict(sent.codes) == {202: len(notes)}
    with Journal(storm.journal) as j:
        wait_for(lambda: j.count_unhandled() == 0 and not j.migrations(active=True), 60,
                 "every migration finished or cancelled")
        ms = j.migrations(limit=10_000)
    phases = Counter(m.phase.value for m in ms)
    assert phases["succeeded"] == MOVES_PER_HOUR and set(phases) <= {"succeeded", "cancelled"}, \
        phases
    moved = {m.component: m for m in ms if m.phase.value == "succeeded"}
    now = _containers(storm.tb)
    for i in range(N):
        comp = svc(i)
        assert now[f"{comp}-n1"][1] == storm.ids[f"{comp}-n1"]  # never touched
        if comp in moved:
            m = moved[comp]
            assert f"{comp}-n2" not in now  # decommissioned
            node, _, status, labels = now[m.canary_name]
            assert (node, status) == (m.target_node, "running")
            assert labels["preshift.migration"] == m.id and labels["preshift.service"] == comp
        else:
            assert now[f"{comp}-n2"][1:3] == (storm.ids[f"{comp}-n2"], "running")
    canaries = {name for name, (_, _, _, labels) in now.items() if "preshift.migration" in labels}
    assert canaries == {m.canary_name for m in moved.values()}  # no orphan
    assert now["intruder"][1:3] == (storm.ids["intruder"], "running")
    assert len(now) == 2 * N + 3  # the same number of containers as before


def test_an_unlabelled_container_is_never_touched(storm: Storm) -> None:
    """A container without Preshift's labels that takes a planned replica's name: intake
    refuses the alert, and the runtime refuses to stop or remove it."""
    tb = storm.tb
    n2 = tb.client("n2")
    n2.containers.get("sx-n2").remove(force=True)
    sid = _run(tb, "n2", "sx-n2", {"team": "someone-else"})
    sent = Sent()
    _send([_notification("a", 0, [_alert("sx", 1, "firing", NOW_STARTS)])], sent)
    assert sent.codes == {202: 1}
    with Journal(storm.journal) as j:
        wait_for(lambda: j.count_unhandled() == 0, 30, "the sx alert handled")
        outcome = next(n.outcome for n in j.notifications(10_000) if n.component == "sx")
        assert not j.migrations(component="sx"), outcome
    # the plan still names sx-n2 (stale: not Preshift's) or no longer lists it at all
    assert outcome.startswith(("no migration: skipped", "nothing to do")), outcome
    rt = DockerRuntime(load_config(storm.config_path).nodes)
    try:
        for call in (rt.standby, lambda node, name, _: rt.remove(node, name),
                     lambda node, name, _: rt.start(node, name)):
            with pytest.raises(ActionError, match=r"sx-n2 on node n2 .*preshift\.service"):
                call("n2", "sx-n2", {})
        with pytest.raises(ActionError, match="intruder"):
            rt.remove("n2", "intruder")
    finally:
        rt.close()
    c = n2.containers.get("sx-n2")
    assert (c.id, c.status) == (sid, "running")


def test_a_resolved_alert_whose_firing_arrives_late_starts_nothing(storm: Storm) -> None:
    """HA peers and retries reorder notifications: the resolved one may be journaled before
    the firing one of the same alert instance. The alert is over; nothing may start."""
    tb = storm.tb
    n2 = tb.client("n2")
    n2.containers.get("sx-n2").remove(force=True)
    _run(tb, "n2", "sx-n2", {"preshift.service": "sx"})
    wait_for(lambda: any(e["component"] == "sx" for e in
                         storm.exporter.footprint()["plan"]["entries"]), 30, "sx planned")
    late = "2026-11-28T11:00:00Z"
    for status in ("resolved", "firing"):
        sent = Sent()
        _send([_notification("b", 1, [_alert("sx", 2, status, late)])], sent)
        assert sent.codes == {202: 1}
        with Journal(storm.journal) as j:
            wait_for(lambda j=j: j.count_unhandled() == 0, 30, f"the {status} one handled")
    with Journal(storm.journal) as j:
        made = [m for m in j.migrations(component="sx") if m.alert_key and late in m.alert_key]
        assert made == [], [(m.id, m.phase) for m in made]
