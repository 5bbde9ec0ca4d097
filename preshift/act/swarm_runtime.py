"""`Runtime` over Docker Swarm services, through one manager (docker-py, Engine API).

A component is every service whose container spec has the label `<prefix>.service`; a replica
is a task. Names (what `Instance.name`, the journal's source/canary names and the HAProxy
server names are):

- a task of a service Preshift did not create: `<service>.<slot>`, e.g. `web.2`. A slot is
  Swarm's stable replica number: a task that restarts or is restored keeps it (a restore
  refills the lowest free slot, the one standby emptied), while the container name
  (`web.2.<task id>`) changes with every task. Service names cannot contain dots, so the
  name splits without ambiguity.
- a service Preshift created (a canary: service label `<prefix>.migration`, one replica):
  the service name, which is the migration's canary name.
`inspect` also accepts a task's container name or ID on the node (what the per-engine
inventory, and so the plan, calls a replica) and answers with the stable name.

The methods:
- `clone`: a new one-replica service pinned to the target (`node.hostname==<hostname>`) from
  the source task's service spec (container spec without mounts, resources, restart policy,
  healthcheck, networks, update config, host-mode published ports with the same published
  port; labels + `labels` on the service and on its containers). The image is copied from the
  source engine when the target lacks it (nodes never pull).
- `standby`: Swarm cannot stop one task and keep it; a scale-down picks the slot to remove
  by its own rules (ties broken by map order; measured: the wrong task half the time, see
  docs). So, with more than one replica, two updates: (A) constraint-add
  `node.hostname!=<node>` and an impossible platform, so only that task is dirty and its
  replacement can be scheduled nowhere (it waits unassigned in the same slot); (B) once the
  replacement is seen: replicas - 1 and the platforms back. Swarm removes first a slot whose
  task has no node, i.e. exactly that slot; no other task is touched (placement-only changes
  leave tasks on matching nodes alone). With one replica: replicas 0 in one update. Either
  way a service label `<prefix>.standby.<slot>` (JSON) records the node, the constraint and
  the step taken, so a retry after a crash finishes the same steps and `start` undoes them.
- `start`: replicas + 1 and the constraint removed in one update (the task comes back in the
  same slot, wherever Swarm places it: HAProxy's server is re-pointed if the node changed).
- `remove`: a Preshift-created service is removed (`service rm`); a standby slot of another
  service is decommissioned by dropping its mark and constraint (Swarm never rebalances, so
  nothing moves; the service keeps its lowered replica count).

Only Preshift's services are changed: before any update, scale or removal the service's
container spec must carry `<prefix>.service`, and a service reused as a canary must carry the
migration label `<prefix>.migration` with the migration's ID; otherwise a non-retriable
ActionError names the service and the missing label, and nothing is sent to the manager.

Limits: replicated services only (global services: ActionError); one standby per service at
a time (intake runs one migration per component); docker-py's low-level `_post_json` is used
for create/update so the spec is sent exactly as read.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import docker.errors

from ..config import NodeConfig
from ..errors import ActionError, SourceError
from ..sense.docker_engine import ClientFactory
from ..sense.swarm import (
    FAILED_STATES,
    STARTING_STATES,
    SwarmNode,
    SwarmService,
    SwarmTask,
    current_task,
    parse_nodes,
    parse_service,
    parse_tasks,
    standby_marks,
)
from .docker_runtime import DockerRuntime, node_address, not_ours
from .ports import Health, Instance

#: A platform no node has: a task needing it is never scheduled (placement-only change).
NOWHERE = {"Architecture": "preshift-standby", "OS": "preshift-standby"}
_SLOT_NAME = re.compile(r"^(?P<service>[A-Za-z0-9][A-Za-z0-9_-]*)\.(?P<slot>[1-9][0-9]*)$")
_POLL = 0.05  # seconds between looks at the manager while waiting (tasks change in ~50 ms)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A replica's place in Swarm: the service (raw + parsed), its slot and that slot's
    tasks (history included), the current task and Preshift's standby mark, if any."""

    raw: Mapping[str, Any]
    service: SwarmService
    slot: int
    name: str
    tasks: tuple[SwarmTask, ...]
    task: SwarmTask | None
    mark: Mapping[str, Any] | None


def split_name(name: str) -> tuple[str, int | None]:
    """`web.2` → ("web", 2); anything else → (name, None)."""
    m = _SLOT_NAME.match(name)
    return (m["service"], int(m["slot"])) if m else (name, None)


def stable_name(service: SwarmService, slot: int, prefix: str = "preshift") -> str:
    """A Preshift-created service's one task is the service; other tasks are
    `<service>.<slot>`."""
    return service.name if service.owned(prefix) and slot == 1 else f"{service.name}.{slot}"


def mark_key(slot: int, prefix: str = "preshift") -> str:
    return f"{prefix}.standby.{slot}"


def _unstacked(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Labels without `docker stack`'s: a copy is not part of the stack (a `stack deploy
    --prune` must not remove it, nor count it)."""
    return {k: v for k, v in (labels or {}).items() if not k.startswith("com.docker.stack.")}


def clone_spec(spec: Mapping[str, Any], name: str, hostname: str, labels: Mapping[str, str],
               image: str | None = None, prefix: str = "preshift") -> dict[str, Any]:
    """The create body of a one-replica copy of the service `spec`, pinned to `hostname`."""
    task = copy.deepcopy(dict(spec.get("TaskTemplate") or {}))
    container = dict(task.get("ContainerSpec") or {})
    container.pop("Mounts", None)  # data does not move (as with plain engines)
    container["Labels"] = {**_unstacked(container.get("Labels")), **labels}
    if image:
        container["Image"] = image
    task["ContainerSpec"] = container
    platforms = [p for p in (task.get("Placement") or {}).get("Platforms") or ()
                 if p != NOWHERE]
    task["Placement"] = {"Constraints": [f"node.hostname=={hostname}"],
                         **({"Platforms": platforms} if platforms else {})}
    task.pop("ForceUpdate", None)
    service_labels = {k: v for k, v in _unstacked(spec.get("Labels")).items()
                      if not k.startswith(f"{prefix}.standby.")}
    service_labels.update(labels)
    service_labels[f"{prefix}.clone_of"] = str(spec.get("Name") or "")
    endpoint = spec.get("EndpointSpec") or {}
    # host mode only: the ingress mesh publishes a port cluster-wide (it would clash with the
    # source's), and it needs IPVS; HAProxy reaches a host-mode port on the node's address
    ports = [dict(p) for p in endpoint.get("Ports") or ()
             if p.get("PublishMode") == "host" and p.get("PublishedPort")]
    body: dict[str, Any] = {
        "Name": name, "Labels": service_labels, "TaskTemplate": task,
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {"Mode": endpoint.get("Mode") or "vip", "Ports": ports},
    }
    for key in ("UpdateConfig", "RollbackConfig"):
        if spec.get(key):
            body[key] = copy.deepcopy(spec[key])
    return body


def _constraints(spec: dict[str, Any]) -> list[str]:
    placement = spec["TaskTemplate"].setdefault("Placement", {})
    return placement.setdefault("Constraints", [])


def _state(task: SwarmTask) -> str:
    """A task's state in Docker's container words (what Instance.state and the machine use)."""
    if task.active:
        if task.running:
            return "running"
        # pending/starting: on its way; finished but wanted: Swarm restarts it
        return "created" if task.state in STARTING_STATES else "restarting"
    return "dead" if task.state in FAILED_STATES else "exited"


class SwarmRuntime:
    """Swarm services through the manager node's engine; per-node engines for containers."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        manager: str,
        label_prefix: str = "preshift",
        timeout: float = 10.0,
        health_path: str | None = None,
        client_factory: ClientFactory | None = None,
        probe_timeout: float = 2.0,
        wait: float = 10.0,
    ) -> None:
        # the plain-engine runtime reads task containers (health, HTTP probe, image copy)
        self.engines = DockerRuntime(nodes, label_prefix, timeout, health_path,
                                     client_factory, probe_timeout)
        if manager not in self.engines.nodes:
            raise ActionError(f"swarm.manager: unknown node {manager!r}; configured nodes: "
                              f"{sorted(self.engines.nodes)}")
        self.manager = manager
        self.prefix = label_prefix
        self.wait = float(wait)
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}  # Preshift node name -> swarm node ID (engine info)

    def close(self) -> None:
        self.engines.close()

    # ------------------------------------------------------------------ manager access
    @property
    def api(self) -> Any:
        """The manager's low-level docker-py client."""
        return self.engines.client(self.manager).api

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        with self.engines.reading(self.manager, f"swarm: {what}"):
            yield

    @contextlib.contextmanager
    def _changing(self, what: str) -> Iterator[None]:
        with self.engines.changing(self.manager, f"swarm: {what}"):
            yield

    def _service_raw(self, name_or_id: str) -> dict[str, Any] | None:
        with self._reading(f"inspect service {name_or_id}"):
            try:
                raw = self.api.inspect_service(name_or_id)
            except docker.errors.NotFound:
                return None
        # the API also matches an ID prefix: only an exact name or ID counts
        if name_or_id not in (raw.get("ID"), (raw.get("Spec") or {}).get("Name")):
            return None
        return dict(raw)

    def _tasks(self, service_id: str) -> tuple[SwarmTask, ...]:
        with self._reading(f"list tasks of service {service_id}"):
            return parse_tasks(self.api.tasks(filters={"service": service_id}))

    def _nodes(self) -> tuple[SwarmNode, ...]:
        with self._reading("list nodes"):
            return parse_nodes(self.api.nodes())

    def _update(self, service_id: str, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Read the spec, change it, send it with its version; retried when another writer
        bumped the version in between ("update out of sequence")."""
        for attempt in range(3):
            raw = self._service_raw(service_id)
            if raw is None:
                raise ActionError(f"service {service_id} is gone", retriable=False)
            spec = copy.deepcopy(raw["Spec"])
            mutate(spec)
            try:
                res = self.api._post_json(self.api._url("/services/{0}/update", raw["ID"]),
                                          data=spec,
                                          params={"version": raw["Version"]["Index"]})
                self.api._raise_for_status(res)
                return
            except docker.errors.APIError as exc:
                if "out of sequence" not in str(exc) or attempt == 2:
                    raise

    def _await(self, done: Callable[[], bool], seconds: float | None = None) -> bool:
        """Poll `done` until true or `seconds` (default: wait) passed; bounded."""
        end = time.monotonic() + (self.wait if seconds is None else seconds)
        while True:
            if done():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(_POLL)

    # ------------------------------------------------------------------ nodes
    def _swarm_id(self, node: str) -> str | None:
        """The swarm node ID of a configured node (its engine's info, cached)."""
        with self._lock:
            known = self._ids.get(node)
        if known is not None:
            return known
        try:
            with self.engines.reading(node, "info"):
                nid = (self.engines.client(node).info().get("Swarm") or {}).get("NodeID")
        except SourceError:
            return None  # unreachable engine: fall back to the hostname
        if nid:
            with self._lock:
                self._ids[node] = str(nid)
        return str(nid) if nid else None

    def _node_name(self, node_id: str, nodes: Sequence[SwarmNode]) -> str | None:
        """The configured node a swarm node ID is: by engine info, else by hostname."""
        if not node_id:
            return None
        for name in self.engines.nodes:
            if self._swarm_id(name) == node_id:
                return name
        # a node not in the configuration keeps its hostname (its address is then unknown)
        return next((n.hostname for n in nodes if n.id == node_id), None)

    def _hostname(self, node: str, nodes: Sequence[SwarmNode]) -> str:
        """The swarm hostname of a configured node (what placement constraints name)."""
        nid = self._swarm_id(node)
        found = [n for n in nodes if n.id == nid] if nid else []
        if not found:
            found = [n for n in nodes if n.hostname == node]
        if not found:
            raise ActionError(f"node {node} is not a swarm node (no swarm node with its engine's "
                              "ID or its name as hostname)", retriable=True)
        host = found[0].hostname
        if sum(1 for n in nodes if n.hostname == host) > 1:
            raise ActionError(f"several swarm nodes have the hostname {host!r}: a constraint "
                              "node.hostname cannot pin one of them; give them unique hostnames")
        return host

    # ------------------------------------------------------------------ resolving names
    def _resolve(self, node: str, name: str) -> _Ref | None:
        """The service and slot `name` stands for (see the module docstring), or None."""
        raw = self._service_raw(name)
        slot: int | None = 1 if raw is not None else None
        if raw is None:
            base, slot = split_name(name)
            if slot is not None:
                raw = self._service_raw(base)
        if raw is None:
            raw, slot = self._by_container(node, name)
        if raw is None or slot is None:
            return None
        svc = parse_service(raw)
        if svc.mode != "replicated":
            raise SourceError("docker swarm", f"service {svc.name} is {svc.mode}: Preshift "
                              "migrates tasks of replicated services only", retriable=False)
        tasks = tuple(t for t in self._tasks(svc.id) if t.slot == slot)
        mark = svc.standby_marks(self.prefix).get(slot)
        return _Ref(raw, svc, slot, stable_name(svc, slot, self.prefix), tasks,
                    current_task(tasks), MappingProxyType(mark) if mark else None)

    def _by_container(self, node: str, ref: str) -> tuple[dict[str, Any] | None, int | None]:
        """A task container's service and slot, from its labels on the node's engine."""
        if node not in self.engines.nodes:
            return None, None
        c = self.engines._get(node, ref)
        if c is None:
            return None, None
        labels = (c.attrs.get("Config") or {}).get("Labels") or {}
        sid = labels.get("com.docker.swarm.service.id")
        task_name = str(labels.get("com.docker.swarm.task.name") or "")
        parts = task_name.split(".")
        if not sid or len(parts) < 3 or not parts[-2].isdigit():
            return None, None  # not a task of a replicated service
        return self._service_raw(sid), int(parts[-2])

    def _instance(self, ref: _Ref, node: str) -> Instance | None:
        """The Instance a slot is now; None when it has no active task and no standby mark."""
        t, svc = ref.task, ref.service
        if t is not None and t.active:
            where = self._node_name(t.node_id, self._nodes()) if t.node_id else None
            where = where or node  # unassigned yet: where it was asked for (a pinned copy)
            state, cid = _state(t), t.container_id
        elif ref.mark is not None:
            where, state = str(ref.mark.get("node") or node), "exited"
            cid = t.container_id if t is not None else ""
        else:
            return None
        cfg = self.engines.nodes.get(where)
        port = svc.host_port
        restart = ((ref.raw["Spec"].get("TaskTemplate") or {}).get("RestartPolicy") or {})
        return Instance(
            node=where, name=ref.name, container_id=cid,
            component=svc.component(self.prefix) or "", state=state, image=svc.image,
            address=node_address(cfg) if cfg is not None and port is not None else None,
            port=port, labels=svc.container_labels,
            restart_policy=str(restart.get("Condition") or "any"),
        )

    def _check_ours(self, svc: SwarmService, node: str, what: str) -> None:
        """ActionError (not retriable) unless the service's tasks carry the component label."""
        if not svc.component(self.prefix):
            raise not_ours(what, node, svc.name, f"{self.prefix}.service", "service")

    # ------------------------------------------------------------------ Runtime
    def inspect(self, node: str, name: str) -> Instance | None:
        ref = self._resolve(node, name)
        return None if ref is None else self._instance(ref, node)

    def clone(
        self, source: Instance, node: str, name: str, labels: Mapping[str, str]
    ) -> Instance:
        what = f"clone {source.node}/{source.name} to {node}/{name}"
        with self._changing(what):
            existing = self._service_raw(name)
            if existing is None:
                self._create_copy(source, node, name, labels, what)
            else:  # adopted only when this migration made it (a retry after a crash)
                key = f"{self.prefix}.migration"
                want = labels.get(key)
                svc = parse_service(existing)
                if want and svc.labels.get(key) != want:
                    raise not_ours(what, node, name, f"{key}={want}", "service")
                self._check_ours(svc, node, what)
            # the orchestrator adds the task within about 50 ms; a pending one is "created"
            self._await(lambda: bool(self._tasks_of_name(name)), min(self.wait, 5.0))
            inst = self.inspect(node, name)
        if inst is None:
            raise ActionError(f"{what}: the new service has no task yet", retriable=True)
        return inst

    def _tasks_of_name(self, name: str) -> tuple[SwarmTask, ...]:
        raw = self._service_raw(name)
        return self._tasks(raw["ID"]) if raw else ()

    def _create_copy(self, source: Instance, node: str, name: str,
                     labels: Mapping[str, str], what: str) -> None:
        cfg = self.engines.nodes.get(node)
        if cfg is None:
            raise ActionError(f"unknown node {node!r}; configured nodes: "
                              f"{sorted(self.engines.nodes)}")
        if node_address(cfg) is None:
            raise ActionError(f"node {node} has no address: set nodes[].address of {node} "
                              "in the configuration (where its published ports are reached)")
        ref = self._resolve(source.node, source.name)
        if ref is None:
            raise ActionError(f"{what}: the source replica is gone", retriable=False)
        hostname = self._hostname(node, self._nodes())
        image = None
        if ref.task is not None and ref.task.container_id:
            src = self.engines._get(source.node, ref.task.container_id)
            if src is not None:  # nodes never pull: copy the image over when it is missing
                got = self.engines.ensure_image(src.attrs, source.node, node)
                image = got if got.startswith("sha256:") else None
        body = clone_spec(ref.raw["Spec"], name, hostname, labels, image, self.prefix)
        try:
            res = self.api._post_json(self.api._url("/services/create"), data=body)
            self.api._raise_for_status(res)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: the name exists, a concurrent clone won
                raise

    def probe(self, instance: Instance) -> Health:
        now = self.inspect(instance.node, instance.name)
        if (now is None or not now.running or not now.container_id
                or now.node not in self.engines.nodes):
            return "unhealthy"
        # the task container on its node: Docker health, else the HTTP probe, else running
        container = self.engines.inspect(now.node, now.container_id)
        if container is None:
            return "unhealthy"
        return self.engines.probe(container)

    def standby(self, node: str, name: str, labels: Mapping[str, str]) -> None:
        with self._changing(f"put {name} on standby"):
            ref = self._resolve(node, name)
            if ref is None:
                return
            self._check_ours(ref.service, node, "standby")
            key, mark = mark_key(ref.slot, self.prefix), dict(ref.mark or {})
            if not mark:
                t = ref.task
                if t is None or not t.active:
                    return  # nothing holds the slot
                nodes = self._nodes()
                host = next((n.hostname for n in nodes if n.id == t.node_id), None) \
                    or self._hostname(node, nodes)
                mark = {"node": self._node_name(t.node_id, nodes) or node, "hostname": host,
                        "constraint": f"node.hostname!={host}", "labels": dict(labels),
                        "task": t.id}
                if (ref.service.replicas or 0) <= 1:
                    mark["step"] = "done"
                    self._update(ref.service.id, lambda s: _scale_down(s, key, mark, 1))
                else:
                    mark["step"] = "excluded"
                    self._update(ref.service.id, lambda s: _exclude(s, key, mark))
            if mark.get("step") == "excluded":
                self._finish_standby(ref, key, mark)
            # like `docker stop`: return once the task has stopped (bounded)
            old = str(mark.get("task") or "")
            self._await(lambda: not any(t.id == old and t.running
                                        for t in self._tasks(ref.service.id)))

    def _finish_standby(self, ref: _Ref, key: str, mark: dict[str, Any]) -> None:
        """Step B: once the slot's replacement waits unassigned, remove that slot."""
        def replacement_waits() -> bool:
            return any(t.slot == ref.slot and t.active and not t.node_id
                       for t in self._tasks(ref.service.id))

        if not self._await(replacement_waits, min(self.wait, 5.0)):
            raise ActionError(f"standby of {ref.name}: Swarm did not create the unassigned "
                              f"replacement of slot {ref.slot} (service {ref.service.name}); "
                              "nothing was removed, retrying", retriable=True)
        done = {**mark, "step": "done"}
        self._update(ref.service.id, lambda s: _scale_down(s, key, done, 1))

    def start(self, node: str, name: str, restart_policy: str | None = None) -> Instance:
        # restart_policy: Swarm's restart policy is the service's and standby leaves it alone
        with self._changing(f"start {name}"):
            ref = self._resolve(node, name)
            if ref is None or (ref.mark is None and (ref.task is None or not ref.task.active)):
                raise ActionError(f"start {name} on node {node}: no such replica")
            self._check_ours(ref.service, node, "start")
            if ref.mark is not None:
                key, mark = mark_key(ref.slot, self.prefix), dict(ref.mark)
                back = 1 if mark.get("step") == "done" else 0  # step A alone removed nothing
                self._update(ref.service.id, lambda s: _restore(s, key, mark, back,
                                                                self.prefix))
            slot_name = ref.name

            def runs() -> bool:
                now = self.inspect(node, slot_name)
                return now is not None and now.running

            self._await(runs)
            inst = self.inspect(node, slot_name)
        if inst is None:
            raise ActionError(f"start {name}: Swarm has no task in slot {ref.slot} of "
                              f"{ref.service.name} yet", retriable=True)
        return inst

    def remove(self, node: str, name: str) -> None:
        with self._changing(f"remove {name}"):
            ref = self._resolve(node, name)
            if ref is None:
                return
            self._check_ours(ref.service, node, "remove")
            if ref.service.owned(self.prefix) and ref.name == ref.service.name:
                with contextlib.suppress(docker.errors.NotFound):  # gone already: fine
                    self.api.remove_service(ref.service.id)
                return
            if ref.mark is None or ref.mark.get("step") != "done":
                self.standby(node, name, {})  # a running replica: take exactly its slot away
                ref = self._resolve(node, name)
                if ref is None or ref.mark is None:
                    return
            key, mark = mark_key(ref.slot, self.prefix), dict(ref.mark)
            # Decommission: the mark and its constraint go; the replica count stays lowered.
            # Swarm does not rebalance, so dropping the constraint moves no task.
            self._update(ref.service.id, lambda s: _restore(s, key, mark, 0, self.prefix))


# ---------------------------------------------------------------------- spec edits (pure)
def _exclude(spec: dict[str, Any], key: str, mark: Mapping[str, Any]) -> None:
    """Step A: only the task on the node becomes dirty; its replacement fits no node."""
    constraints = _constraints(spec)
    if mark["constraint"] not in constraints:
        constraints.append(mark["constraint"])
    placement = spec["TaskTemplate"]["Placement"]
    spec_mark = dict(mark)
    spec_mark["platforms"] = [p for p in placement.get("Platforms") or () if p != NOWHERE]
    placement["Platforms"] = [NOWHERE]
    spec.setdefault("Labels", {})[key] = json.dumps(spec_mark, sort_keys=True)


def _scale_down(spec: dict[str, Any], key: str, mark: Mapping[str, Any], by: int) -> None:
    """Step B (or the one step with one replica): one replica fewer, platforms back."""
    labels = spec.setdefault("Labels", {})
    old = json.loads(labels[key]) if key in labels else {}
    if old.get("step") == "done":
        return  # already taken (a retry after a crash): never scale twice
    replicated = spec["Mode"]["Replicated"]
    replicated["Replicas"] = max(0, int(replicated.get("Replicas") or 0) - by)
    constraints = _constraints(spec)
    if mark["constraint"] not in constraints:
        constraints.append(mark["constraint"])
    _platforms_back(spec, old.get("platforms"))
    labels[key] = json.dumps({**old, **mark, "step": "done"}, sort_keys=True)


def _restore(spec: dict[str, Any], key: str, mark: Mapping[str, Any], back: int,
             prefix: str) -> None:
    """Undo a standby: `back` replicas more, the constraint (unless another standby of the
    service needs it) and the mark gone, platforms back."""
    labels = spec.setdefault("Labels", {})
    if key not in labels:
        return  # already undone
    old = json.loads(labels.pop(key))
    if back:
        replicated = spec["Mode"]["Replicated"]
        replicated["Replicas"] = int(replicated.get("Replicas") or 0) + back
    others = {m.get("constraint") for m in standby_marks(labels, prefix).values()}
    constraints = _constraints(spec)
    if mark["constraint"] not in others and mark["constraint"] in constraints:
        constraints.remove(mark["constraint"])
    if old.get("step") != "done":
        _platforms_back(spec, old.get("platforms"))


def _platforms_back(spec: dict[str, Any], platforms: Any) -> None:
    placement = spec["TaskTemplate"].setdefault("Placement", {})
    kept = [p for p in placement.get("Platforms") or () if p != NOWHERE]
    restored = kept or list(platforms or ())
    if restored:
        placement["Platforms"] = restored
    else:
        placement.pop("Platforms", None)
