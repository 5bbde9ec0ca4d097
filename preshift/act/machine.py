"""The migration state machine's decisions: `decide(migration, observation, settings, now)`.
Pure: no I/O, no clock; the executor observes, decides, journals and acts.

A decision is the row changes to write and at most one effect (`effects.py`) to take first.
Every rule reads the *observation* (containers, HAProxy servers) rather than trusting the
row, so a decision repeated after a crash converges: a clone that already happened is seen
as a running canary, a removed server as absent. Where the world cannot tell (weights, ready),
the row's `data["done"]` lists the sub-steps of the phase already taken.

Row `data` keys: started_at, progress_at (last progress, for progress_deadline), full_weight
(the HAProxy weight that means "100 %"), shifted_step / step_at / base (the step whose weights
are set, when, and the canary's counters then), last_check, done (sub-steps of this phase),
decommission (the standby is being removed), plan / copy_from (from intake).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import AnalysisConfig, Config
from ..model import SCALE_UP_LABEL
from . import effects as fx
from .analysis import Counters, Result, analyse
from .phases import Phase
from .ports import Health, Instance, Server
from .records import Migration

P = Phase
#: Phases that wait for a person or a timer of their own, not for progress.
NO_DEADLINE = frozenset({P.PLANNED, P.AWAITING_APPROVAL, P.STANDBY})
#: Phases in which the canary's health is probed.
PROBED = frozenset({P.HEALTH_CHECK, P.AWAITING_APPROVAL, P.SHIFTING, P.PROMOTED, P.DRAINING,
                    P.STANDBY})


@dataclass(frozen=True, slots=True)
class Settings:
    """What the machine needs from the configuration."""

    step_weights: tuple[int, ...] = (10, 25, 50, 75, 100)
    step_interval: float = 2.0
    health_timeout: float = 30.0
    drain_timeout: float = 30.0
    progress_deadline: float = 120.0
    standby_ttl: float = 600.0
    require_approval: bool = False
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    label_prefix: str = "preshift"
    #: When this executor started: timeouts and the progress deadline count from here at the
    #: earliest, so a webhook that was down longer than a deadline resumes its migrations
    #: instead of rolling them all back (or failing their rollbacks) on its first tick.
    resumed_at: float = 0.0

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        mc = config.migration
        return cls(mc.step_weights, mc.step_interval, mc.health_timeout, mc.drain_timeout,
                   mc.progress_deadline, mc.standby_ttl, mc.require_approval, mc.analysis,
                   config.docker.label_prefix)


@dataclass(frozen=True, slots=True)
class Observation:
    """The world as the executor saw it this tick (None: absent or not looked at)."""

    source: Instance | None = None  # the replica replaced (move) or copied (scale-up)
    source_health: Health | None = None  # probed while restoring only
    canary: Instance | None = None
    canary_health: Health | None = None
    servers: Mapping[str, Server] = field(default_factory=dict)  # the backend's servers
    query_value: float | None = None  # the analysis query's value, when it was run
    blocked: str | None = None  # PLANNED: the safety limit that holds it back
    #: Why the canary could not be looked at (its node's engine is unreachable); `canary`
    #: is then None without meaning "gone".
    canary_unreachable: str | None = None
    #: The same for the original (`source` is then None): it may still be there, stopped
    #: with its engine, and start again when the engine does.
    source_unreachable: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    changes: Mapping[str, Any] = field(default_factory=dict)  # Migration fields to write
    effect: fx.Effect | None = None  # taken before the changes are written
    note: str = ""  # why (journaled with the step)

    @property
    def idle(self) -> bool:
        return not self.changes and self.effect is None


IDLE = Decision()


def decide(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    """At most one step for `m`, given what was observed."""
    if m.terminal:
        return IDLE
    if m.dry_run and m.phase == P.PLANNED:  # a dry-run migration is never observed or acted on
        return _to(m, P.DRY_RUN, now, note="dry-run: journaled, nothing changed",
                   data={"steps": describe(m, s)})
    return (_request(m, s, now) or _deadline(m, s, now)
            or (_unreachable(m, obs, now) if obs.canary_unreachable else None)
            or _PHASES[m.phase](m, obs, s, now))


def wants_query(m: Migration, s: Settings, now: float) -> bool:
    """True when this tick's decision may use the analysis query (so the executor runs it)."""
    return (bool(s.analysis.query) and m.phase == P.SHIFTING and "step_at" in m.data
            and now - float(m.data["step_at"]) >= s.step_interval)


def on_error(m: Migration, message: str, retriable: bool, now: float) -> Decision:
    """An effect or observation failed: retry later, or leave the phase for the way back."""
    if retriable:
        return Decision({"attempt": m.attempt + 1, "error": message}, note=message)
    if m.phase in (P.ROLLING_BACK, P.RESTORING) or m.data.get("decommission"):
        target = P.FAILED
    elif m.phase == P.PLANNED:
        target = P.CANCELLED
    elif m.phase == P.STANDBY:
        target = P.RESTORING
    else:
        target = P.ROLLING_BACK
    return _to(m, target, now, reason=f"{m.phase}: {message}", error=message, note=message)


def describe(m: Migration, s: Settings) -> list[str]:
    """The steps a migration would take (the dry-run's plan, human-readable)."""
    src = f"{m.source_name}@{m.source_node}" if m.source_name else "a running replica"
    steps = [f"start {m.canary_name} on {m.target_node} as a copy of {src}",
             f"wait until it is healthy (≤ {s.health_timeout:g}s)"]
    if s.require_approval:
        steps.append("wait for approve")
    if m.backend:
        steps += [f"add it to HAProxy backend {m.backend} at weight 0, wait until UP",
                  f"shift weights {list(s.step_weights)} every {s.step_interval:g}s, analysis "
                  f"at each step (rollback after {s.analysis.failed_checks} failed checks)"]
    else:
        steps.append(f"no traffic layer: promote after {s.step_interval:g}s healthy")
    if m.action == "move":
        steps += [f"drain {m.source_name} (≤ {s.drain_timeout:g}s), stop it and keep it on "
                  f"standby for {s.standby_ttl:g}s", "then remove it"]
    return steps


# -- helpers ------------------------------------------------------------------------------


def _to(m: Migration, phase: Phase, now: float, *, note: str = "",
        data: Mapping[str, Any] | None = None, **fields: Any) -> Decision:
    """A change of phase: counters of the old phase reset, progress noted."""
    d = {k: v for k, v in m.data.items() if k not in ("done", "last_check", "cleanup")}
    d.update(progress_at=now, **(data or {}))
    changes = {"phase": phase, "attempt": 0, "data": d, **fields}
    return Decision(changes, note=note or fields.get("reason", ""))


def _step(m: Migration, effect: fx.Effect | None, now: float, *, note: str = "",
          data: Mapping[str, Any] | None = None, done: str | None = None,
          **fields: Any) -> Decision:
    """Stay in the phase; take `effect`; mark sub-step `done`; progress noted."""
    d = dict(m.data)
    d.update(progress_at=now, **(data or {}))
    if done:
        d["done"] = [*m.data.get("done", ()), done]
    return Decision({"data": d, "attempt": 0, **fields}, effect, note)


def _back(m: Migration, now: float, why: str) -> Decision:
    return _to(m, P.ROLLING_BACK, now, reason=why)


def _alive(i: Instance | None) -> bool:
    return i is not None and i.running


def _canary_trouble(m: Migration, obs: Observation, *, routed: bool = True) -> str | None:
    """Why the canary cannot keep serving, or None. Before it is routed (`routed=False`)
    HAProxy's DOWN only means its health checks have not passed yet."""
    c = obs.canary
    if c is None:
        return f"the new instance {m.canary_name} is gone"
    if not c.running:
        return f"the new instance {m.canary_name} is {c.state}"
    if obs.canary_health == "unhealthy":
        return f"the new instance {m.canary_name} is unhealthy"
    srv = obs.servers.get(m.canary_name) if m.backend else None
    if routed and srv is not None and srv.status.upper().startswith("DOWN"):
        return f"HAProxy reports {m.backend}/{m.canary_name} {srv.status}"
    return None


def _full_weight(m: Migration, servers: Mapping[str, Server]) -> int:
    """The HAProxy weight that stands for 100 %: the source's (move) or the others' median
    (scale-up), so the backend's balance with the other replicas stays as it was."""
    if m.action == "move":
        src = servers.get(m.source_name or "")
        return src.weight if src is not None and src.weight > 0 else 100
    others = [s.weight for n, s in servers.items() if n != m.canary_name and s.weight > 0]
    return int(statistics.median(others)) if others else 100


def _weights(m: Migration, servers: Mapping[str, Server], percent: int) -> fx.SetWeights:
    full = int(m.data.get("full_weight", 100))
    canary = round(full * percent / 100)
    pairs = [(m.canary_name, canary)]
    if m.action == "move" and m.source_name and m.source_name in servers:
        pairs.append((m.source_name, full - canary))  # the pair keeps the source's share
    return fx.SetWeights(m.backend or "", tuple(pairs))


# -- requests and deadlines ----------------------------------------------------------------


def _request(m: Migration, s: Settings, now: float) -> Decision | None:
    r = m.request
    if r is None:
        return None
    if r == "approve":
        if m.phase == P.AWAITING_APPROVAL:
            return _to(m, P.ROUTING, now, approval="approved", request=None, note="approved")
        return Decision({"request": None}, note="approve ignored: not awaiting approval")
    why = f"{r} requested by an operator"
    if m.phase == P.PLANNED:
        return _to(m, P.CANCELLED, now, reason=why, request=None)
    if m.phase == P.STANDBY and not m.data.get("decommission"):
        return _to(m, P.RESTORING, now, reason=why, request=None)
    if m.phase in (P.ROLLING_BACK, P.RESTORING, P.STANDBY):
        return Decision({"request": None}, note=f"{r} ignored: already {m.phase}")
    return _to(m, P.ROLLING_BACK, now, reason=why, request=None)


def _since(m: Migration, s: Settings) -> float:
    """Start of the current phase's clock (an executor restart restarts it)."""
    return max(m.phase_since, s.resumed_at)


def _deadline(m: Migration, s: Settings, now: float) -> Decision | None:
    if m.phase in NO_DEADLINE:
        return None
    if m.phase in (P.ROLLING_BACK, P.RESTORING) and m.data.get("cleanup"):
        # Traffic is back on the original; only removing the canary on an unreachable
        # engine is left. Giving up (FAILED) would leave it behind once the engine returns,
        # so the obligation stays until the removal succeeds.
        return None
    since = max(m.phase_since, float(m.data.get("progress_at", 0.0)), s.resumed_at)
    if now - since <= s.progress_deadline:
        return None
    why = (f"no progress in {m.phase} for {now - since:.0f}s "
           f"(progress_deadline {s.progress_deadline:g}s)")
    if m.error:
        why += f"; last error: {m.error}"
    if m.phase in (P.ROLLING_BACK, P.RESTORING):
        return _to(m, P.FAILED, now, reason=why)
    return _back(m, now, why)


def _unreachable(m: Migration, obs: Observation, now: float) -> Decision | None:
    """The canary's engine did not answer. Before the canary is needed (STARTING) that is
    a transient error the progress deadline bounds; once it carries (or is about to carry)
    traffic it cannot be watched, so the original takes over: rollback, or restore the
    standby. Rolling back and restoring go on (their traffic steps need no engine) and keep
    the canary's removal for when the engine answers again (`_undo_traffic`)."""
    why = f"the engine of {m.target_node} is unreachable: {obs.canary_unreachable}"
    if m.phase == P.STARTING:
        return Decision({"attempt": m.attempt + 1, "error": why}, note=why)
    if m.phase == P.STANDBY:
        return None if m.data.get("decommission") else _to(m, P.RESTORING, now, reason=why)
    if m.phase in (P.HEALTH_CHECK, P.AWAITING_APPROVAL, P.ROUTING, P.SHIFTING, P.PROMOTED,
                   P.DRAINING):
        return _back(m, now, why)
    return None


# -- the phases ----------------------------------------------------------------------------


def _planned(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    # The limits first: a waiting migration's source is not even looked at (the executor
    # skips it), and a stale one is cancelled when it could start — nothing changed meanwhile.
    if obs.blocked:
        if m.data.get("waiting") != obs.blocked:
            return Decision({"data": {**m.data, "waiting": obs.blocked}}, note=obs.blocked)
        return IDLE
    if m.action == "move" and not _alive(obs.source):
        if obs.source_unreachable:
            # Nothing to copy the spec from; the exporter's next plan starts a new instance
            # from a replica it can read instead.
            return _to(m, P.CANCELLED, now, reason=f"the engine of {m.source_node} is "
                       f"unreachable: {obs.source_unreachable}")
        return _to(m, P.CANCELLED, now, reason=f"plan is stale: {m.source_name} no longer "
                   f"runs on {m.source_node}")
    return _to(m, P.STARTING, now, data={"started_at": now, "waiting": None},
               note="slot free")


def _starting(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    c, src = obs.canary, obs.source
    found = {"source_node": src.node, "source_name": src.name} if src else {}
    if _alive(c):
        return _to(m, P.HEALTH_CHECK, now, note="the new instance runs", **found)
    if src is None or not src.running:
        if c is not None:
            return _back(m, now, f"{m.canary_name} is {c.state} and no replica is left to copy")
        if src is None and obs.source_unreachable:
            # Not "no replica": the others may run; only the one to copy cannot be read.
            return _to(m, P.CANCELLED, now, reason=f"the engine of {m.source_node} is "
                       f"unreachable: {obs.source_unreachable}")
        return _to(m, P.CANCELLED, now,
                   reason=f"no running replica of {m.component} to copy")
    key = "replaces" if m.action == "move" else "copy_of"
    labels = {f"{s.label_prefix}.migration": m.id, f"{s.label_prefix}.{key}": src.name}
    if m.action == "scale_up":  # a spare: the planner leaves it out of the intended count
        labels[f"{s.label_prefix}.{SCALE_UP_LABEL}"] = "true"
    eff = fx.Clone(src, m.target_node, m.canary_name, labels)
    return Decision({**_to(m, P.HEALTH_CHECK, now).changes, **found}, eff, "clone")


def _health_check(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    c = obs.canary
    if c is None:
        return _back(m, now, f"the new instance {m.canary_name} disappeared")
    if c.state in ("exited", "dead"):
        return _back(m, now, f"the new instance {m.canary_name} is {c.state}")
    if obs.canary_health == "healthy":
        if s.require_approval:
            return _to(m, P.AWAITING_APPROVAL, now, approval="pending", note="healthy")
        return _to(m, P.ROUTING, now, note="healthy")
    if now - _since(m, s) > s.health_timeout:
        return _back(m, now, f"{m.canary_name} not healthy within {s.health_timeout:g}s "
                     f"(last probe: {obs.canary_health or c.state})")
    return IDLE


def _awaiting(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    trouble = _canary_trouble(m, obs)
    return _back(m, now, trouble) if trouble else IDLE


def _routing(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    c = obs.canary
    trouble = _canary_trouble(m, obs, routed=False)
    if trouble or c is None:
        return _back(m, now, trouble or "the new instance is gone")
    if not m.backend:  # no traffic layer: nothing to register
        return _to(m, P.SHIFTING, now, step=0, data={"step_at": now}, note="no traffic layer")
    srv = obs.servers.get(m.canary_name)
    if srv is None:
        if c.address is None or c.port is None:
            return _back(m, now, f"{m.canary_name} publishes no port HAProxy could reach")
        return _step(m, fx.AddServer(m.backend, m.canary_name, c.address, c.port), now)
    if not srv.up:  # a new server starts DOWN until HAProxy's own health checks pass
        if now - _since(m, s) > s.health_timeout:
            return _back(m, now, f"HAProxy's health checks of {m.backend}/{m.canary_name} did "
                         f"not pass within {s.health_timeout:g}s ({srv.status})")
        return IDLE
    full = m.data.get("full_weight") or _full_weight(m, obs.servers)
    return _to(m, P.SHIFTING, now, step=0, weight=0, data={"full_weight": full},
               note=f"{m.backend}/{m.canary_name} is UP")


def _shifting(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    if not _alive(obs.canary):
        return _back(m, now, f"the new instance {m.canary_name} stopped")
    srv = obs.servers.get(m.canary_name) if m.backend else None
    target = s.step_weights[min(m.step, len(s.step_weights) - 1)]
    if m.backend and m.data.get("shifted_step") != m.step:
        if srv is None:
            return _back(m, now, f"{m.backend}/{m.canary_name} left the backend")
        base = [srv.requests, srv.failures]
        return _step(m, _weights(m, obs.servers, target), now, weight=target,
                     note=f"step {m.step + 1}/{len(s.step_weights)}: {target}%",
                     data={"shifted_step": m.step, "step_at": now, "base": base})
    step_at = float(m.data.get("step_at", m.phase_since))
    if now - step_at < s.step_interval:
        return IDLE
    if obs.canary_health == "unhealthy":
        res = Result("fail", f"the new instance {m.canary_name} is unhealthy")
    elif not m.backend and obs.canary_health != "healthy":
        res = Result("hold", f"the new instance is {obs.canary_health or 'not probed'}")
    else:
        base = m.data.get("base")
        res = analyse(s.analysis, baseline=Counters(*base) if base else None, server=srv,
                      with_traffic=bool(m.backend), query_value=obs.query_value)
    check = {**res.to_dict(), "at": now, "step": m.step}
    if res.verdict == "pass":
        if m.step >= len(s.step_weights) - 1:
            return _to(m, P.PROMOTED, now, weight=100, note=res.reason,
                       data={"last_check": check})
        # step_at: without a traffic layer no weight step restarts the interval clock
        return _step(m, None, now, step=m.step + 1, note=res.reason,
                     data={"last_check": check, "step_at": now})
    if res.verdict == "hold":
        last = m.data.get("last_check") or {}
        if last.get("verdict") == "hold" and last.get("step") == m.step:
            return IDLE  # still no data; the progress deadline decides
        return Decision({"data": {**m.data, "last_check": check}}, note=res.reason)
    failed = m.failed_checks + 1
    if failed >= s.analysis.failed_checks:
        return _to(m, P.ROLLING_BACK, now, failed_checks=failed,
                   reason=f"analysis failed {failed} time(s): {res.reason}")
    # A failed check: count it, and judge the same step again on fresh counters.
    fresh = [srv.requests, srv.failures] if srv is not None else m.data.get("base")
    d = {**m.data, "last_check": check, "step_at": now, "base": fresh}
    return Decision({"failed_checks": failed, "data": d}, note=res.reason)


def _promoted(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    trouble = _canary_trouble(m, obs)
    if trouble:
        return _back(m, now, trouble)
    if m.action != "move":
        return _to(m, P.SUCCEEDED, now, note="the new replica carries its share")
    if m.backend and m.source_name in obs.servers:
        return Decision(_to(m, P.DRAINING, now, data={"drained": True}).changes,
                        fx.Drain(m.backend, m.source_name or ""))
    return _to(m, P.DRAINING, now, note="nothing to drain")


def _draining(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    trouble = _canary_trouble(m, obs)
    if trouble:
        return _back(m, now, trouble)
    standby = _to(m, P.STANDBY, now).changes
    if _alive(obs.source) and "restart_policy" not in m.data:
        # Journaled in a step of its own, before the standby: standby sets the policy to
        # "no", and a restore must give the original back even after a crash in between.
        policy = obs.source.restart_policy if obs.source else None
        return _step(m, None, now, data={"restart_policy": policy},
                     note="original restart policy recorded")
    if not _alive(obs.source):  # already stopped (a crash after the effect) or gone
        return Decision(standby, note=f"{m.source_name} is already stopped")
    srv = obs.servers.get(m.source_name or "") if m.backend else None
    if srv is not None and srv.sessions > 0 and now - _since(m, s) < s.drain_timeout:
        return IDLE
    labels = {f"{s.label_prefix}.standby_for": m.id}
    return Decision(standby, fx.Standby(m.source_node or "", m.source_name or "", labels),
                    f"{srv.sessions if srv else 0} session(s) left")


def _standby(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    if not m.data.get("decommission"):
        trouble = _canary_trouble(m, obs)
        if trouble:
            return _to(m, P.RESTORING, now, reason=trouble)
        if now - m.phase_since < s.standby_ttl:
            return IDLE
    mark = {"decommission": True}
    if m.backend and m.source_name in obs.servers:
        return _step(m, fx.RemoveServer(m.backend, m.source_name or ""), now, data=mark)
    if obs.source is not None:
        return _step(m, fx.RemoveContainer(obs.source.node, obs.source.name), now, data=mark)
    if obs.source_unreachable:
        # Its engine stopped it, and will start it again (restart policy) when it returns:
        # an extra replica nobody planned. Keep the removal until the engine answers.
        why = (f"{m.source_name} on {m.source_node} is removed once its engine answers: "
               f"{obs.source_unreachable}")
        if m.data.get("cleanup") and m.error == why:
            return IDLE
        return Decision({"data": {**m.data, **mark, "cleanup": True}, "error": why,
                         "attempt": m.attempt + 1}, note=why)
    return _to(m, P.SUCCEEDED, now, note=f"standby {m.source_name} decommissioned")


def _undo_traffic(m: Migration, obs: Observation, done: list[str],
                  now: float) -> Decision | None:
    """Shared tail of rolling back and restoring: the original back to full weight, then the
    canary out of HAProxy, then its container removed. None when all is done."""
    if m.backend:
        src = obs.servers.get(m.source_name or "") if m.action == "move" else None
        drained = m.data.get("drained") or (
            src is not None and src.status.upper().startswith(("DRAIN", "MAINT")))
        if src is not None and drained and "ready" not in done:
            return _step(m, fx.Ready(m.backend, src.name), now, done="ready")
        if "weights" not in done:
            pairs: list[tuple[str, int]] = []
            if src is not None and "full_weight" in m.data:
                pairs.append((src.name, int(m.data["full_weight"])))
            if m.canary_name in obs.servers:
                pairs.append((m.canary_name, 0))
            if pairs:
                return _step(m, fx.SetWeights(m.backend, tuple(pairs)), now, done="weights",
                             weight=0)
        if m.canary_name in obs.servers:
            return _step(m, fx.RemoveServer(m.backend, m.canary_name), now)
    if obs.canary is not None:
        return _step(m, fx.RemoveContainer(obs.canary.node, obs.canary.name), now)
    if obs.canary_unreachable:
        # It may still exist there: keep the obligation (no deadline, see `_deadline`).
        why = (f"{m.canary_name} on {m.target_node} is removed once its engine answers: "
               f"{obs.canary_unreachable}")
        if m.data.get("cleanup") and m.error == why:
            return IDLE  # nothing new to journal; the next tick looks again
        return Decision({"data": {**m.data, "cleanup": True}, "error": why,
                         "attempt": m.attempt + 1}, note=why)
    return None


def _rolling_back(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    done = list(m.data.get("done", ()))
    if m.action == "move" and obs.source is None and _alive(obs.canary):
        # Removing the canary now would leave nothing serving: keep it, call a human.
        if obs.source_unreachable:
            return _to(m, P.FAILED, now, reason=(
                f"the engine of {m.source_node} is unreachable, so the original "
                f"{m.source_name} cannot take its traffic back; the new instance "
                f"{m.canary_name} is kept serving. When {m.source_node} returns, its restart "
                "policy may start the original next to it: keep one (see the runbook)"))
        return _to(m, P.FAILED, now, reason=f"the original {m.source_name} is gone; the new "
                   f"instance {m.canary_name} is kept serving (see the runbook)")
    if m.action == "move" and obs.source is not None and not obs.source.running:
        # Only possible after a crash right after the standby step; start it again first.
        return _step(m, fx.StartContainer(obs.source.node, obs.source.name,
                                          m.data.get("restart_policy")), now)
    return (_undo_traffic(m, obs, done, now)
            or _to(m, P.ROLLED_BACK, now, weight=0, note="the original serves as before"))


def _restoring(m: Migration, obs: Observation, s: Settings, now: float) -> Decision:
    src = obs.source
    if src is None:
        if obs.source_unreachable:
            return _to(m, P.FAILED, now, reason=(
                f"the engine of {m.source_node} is unreachable: cannot restore the standby "
                f"{m.source_name}; the new instance keeps what traffic it has (see the "
                "runbook)"))
        return _to(m, P.FAILED, now, reason=f"the standby {m.source_name} is gone: cannot "
                   "restore it")
    if not src.running:
        return _step(m, fx.StartContainer(src.node, src.name, m.data.get("restart_policy")),
                     now)
    if obs.source_health != "healthy":
        return IDLE  # the deadline turns a standby that never gets healthy into FAILED
    done = list(m.data.get("done", ()))
    if m.backend:
        srv = obs.servers.get(src.name)
        # On Swarm a restored replica is a new task in the same slot, placed where Swarm
        # chooses: when it came back on another node, its server is re-pointed there.
        moved = (srv is not None and src.node != m.source_node and src.address is not None
                 and (srv.address, srv.port) != (src.address, src.port))
        if srv is None or moved:
            if src.address is None or src.port is None:
                return _to(m, P.FAILED, now, reason=f"{src.name} publishes no port")
            return _step(m, fx.AddServer(m.backend, src.name, src.address, src.port), now)
        if "ready" not in done:
            return _step(m, fx.Ready(m.backend, src.name), now, done="ready")
        if not srv.up:
            return IDLE  # the canary keeps its weight until HAProxy sees the original UP
    return (_undo_traffic(m, obs, done, now)
            or _to(m, P.ROLLED_BACK, now, weight=0, note=f"{src.name} restored"))


_PHASES = {
    P.PLANNED: _planned, P.STARTING: _starting, P.HEALTH_CHECK: _health_check,
    P.AWAITING_APPROVAL: _awaiting, P.ROUTING: _routing, P.SHIFTING: _shifting,
    P.PROMOTED: _promoted, P.DRAINING: _draining, P.STANDBY: _standby,
    P.RESTORING: _restoring, P.ROLLING_BACK: _rolling_back,
}
