"""SwarmRuntime's pure parts: names, the copy's spec, the standby/restore spec edits, the
config and factory wiring, and the machine re-pointing a restored replica that moved."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from preshift.act import swarm_runtime as sr
from preshift.act.factory import make_runtime
from preshift.act.machine import Observation, Settings, decide
from preshift.act.phases import Phase
from preshift.act.ports import Instance, Server
from preshift.act.records import Migration
from preshift.config import parse_config
from preshift.errors import ConfigError
from preshift.sense.swarm import parse_service

SPEC: dict[str, Any] = {
    "Name": "web",
    "Labels": {"team": "blue", "com.docker.stack.namespace": "shop",
               "preshift.standby.2": "{}"},
    "TaskTemplate": {
        "ContainerSpec": {"Image": "box:1", "Labels": {"preshift.service": "web",
                                                       "com.docker.stack.namespace": "shop"},
                          "Env": ["A=1"], "Mounts": [{"Type": "volume", "Target": "/data"}],
                          "Init": True, "StopGracePeriod": 2_000_000_000},
        "RestartPolicy": {"Condition": "any", "Delay": 200_000_000},
        "Resources": {"Limits": {"MemoryBytes": 64 << 20}},
        "Placement": {"Constraints": ["node.labels.preshift.site==dc1"],
                      "Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
        "Networks": [{"Target": "overlay1"}],
        "ForceUpdate": 3,
    },
    "Mode": {"Replicated": {"Replicas": 2}},
    "UpdateConfig": {"Order": "start-first", "Monitor": 1_000_000_000},
    "EndpointSpec": {"Mode": "vip", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081,
         "PublishMode": "ingress"}]},
}


def test_names_split_and_stable_names() -> None:
    assert sr.split_name("web.2") == ("web", 2)
    assert sr.split_name("web-m-1") == ("web-m-1", None)
    assert sr.split_name("web.2.abcdef") == ("web.2.abcdef", None)  # a container name
    assert sr.split_name("web.0") == ("web.0", None)  # slots start at 1
    user = parse_service({"ID": "s", "Spec": SPEC})
    owned = parse_service({"ID": "o", "Spec": {**SPEC, "Name": "web-m-1",
                                               "Labels": {"preshift.migration": "m-1"}}})
    assert sr.stable_name(user, 2) == "web.2"
    assert sr.stable_name(owned, 1) == "web-m-1"
    assert sr.stable_name(owned, 2) == "web-m-1.2"  # someone scaled the copy up
    assert sr.mark_key(2) == "preshift.standby.2"


def test_clone_spec_pins_one_replica_and_keeps_what_runs_the_task() -> None:
    labels = {"preshift.migration": "m-1", "preshift.replaces": "web.2"}
    body = sr.clone_spec(SPEC, "web-m-1", "n3", labels, image="sha256:abc")
    task = body["TaskTemplate"]
    assert body["Name"] == "web-m-1" and body["Mode"] == {"Replicated": {"Replicas": 1}}
    assert task["Placement"] == {"Constraints": ["node.hostname==n3"],
                                 "Platforms": [{"Architecture": "amd64", "OS": "linux"}]}
    cs = task["ContainerSpec"]
    assert "Mounts" not in cs and cs["Image"] == "sha256:abc" and cs["Env"] == ["A=1"]
    assert cs["Labels"] == {"preshift.service": "web", **labels}  # stack label dropped
    assert body["Labels"] == {"team": "blue", **labels, "preshift.clone_of": "web"}
    assert task["RestartPolicy"] == SPEC["TaskTemplate"]["RestartPolicy"]
    assert task["Resources"] == SPEC["TaskTemplate"]["Resources"]
    assert task["Networks"] == [{"Target": "overlay1"}] and "ForceUpdate" not in task
    assert body["EndpointSpec"]["Ports"] == [SPEC["EndpointSpec"]["Ports"][0]]  # host only
    assert body["UpdateConfig"] == SPEC["UpdateConfig"]
    assert SPEC["TaskTemplate"]["ContainerSpec"]["Mounts"]  # the source spec is untouched
    assert sr.clone_spec(SPEC, "c", "n3", {})["TaskTemplate"]["ContainerSpec"]["Image"] == "box:1"


def _spec() -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["Labels"] = {"team": "blue"}
    return spec


MARK = {"node": "n2", "hostname": "n2", "constraint": "node.hostname!=n2", "task": "t2"}


def test_standby_in_two_steps_then_restore_gives_the_spec_back() -> None:
    spec = _spec()
    key = sr.mark_key(2)
    sr._exclude(spec, key, {**MARK, "step": "excluded"})
    placement = spec["TaskTemplate"]["Placement"]
    assert placement["Constraints"] == ["node.labels.preshift.site==dc1", "node.hostname!=n2"]
    assert placement["Platforms"] == [sr.NOWHERE]  # the replacement fits nowhere
    assert spec["Mode"]["Replicated"]["Replicas"] == 2  # step A removes nothing
    assert json.loads(spec["Labels"][key])["platforms"] == [
        {"Architecture": "amd64", "OS": "linux"}]

    sr._scale_down(spec, key, {**MARK, "step": "done"}, 1)
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    assert placement["Platforms"] == [{"Architecture": "amd64", "OS": "linux"}]
    assert json.loads(spec["Labels"][key])["step"] == "done"
    sr._scale_down(spec, key, {**MARK, "step": "done"}, 1)  # a retry never scales twice
    assert spec["Mode"]["Replicated"]["Replicas"] == 1

    sr._restore(spec, key, MARK, 1, "preshift")  # start: the replica comes back
    assert spec == _spec()
    sr._restore(spec, key, MARK, 1, "preshift")  # again: nothing
    assert spec == _spec()


def test_restore_after_step_a_only_adds_no_replica() -> None:
    spec, key = _spec(), sr.mark_key(2)
    sr._exclude(spec, key, {**MARK, "step": "excluded"})
    sr._restore(spec, key, MARK, 0, "preshift")
    assert spec == _spec()


def test_decommission_keeps_the_lower_count_and_a_constraint_another_standby_needs() -> None:
    spec = _spec()
    spec["TaskTemplate"]["Placement"] = {}
    sr._scale_down(spec, sr.mark_key(2), {**MARK, "step": "done"}, 1)
    sr._scale_down(spec, sr.mark_key(3), {**MARK, "step": "done"}, 1)  # same node, slot 3
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.hostname!=n2"]
    sr._restore(spec, sr.mark_key(2), MARK, 0, "preshift")  # decommission slot 2
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.hostname!=n2"]
    sr._restore(spec, sr.mark_key(3), MARK, 0, "preshift")
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == []
    assert spec["Mode"]["Replicated"]["Replicas"] == 0
    assert "Platforms" not in spec["TaskTemplate"]["Placement"]


def test_task_states_in_container_words() -> None:
    from preshift.sense.swarm import SwarmTask

    def t(desired: str, state: str) -> SwarmTask:
        return SwarmTask("t", "s", 1, "n", desired, state)

    assert sr._state(t("running", "running")) == "running"
    assert sr._state(t("running", "pending")) == "created"
    assert sr._state(t("ready", "assigned")) == "created"
    assert sr._state(t("running", "failed")) == "restarting"
    assert sr._state(t("shutdown", "complete")) == "exited"
    assert sr._state(t("shutdown", "rejected")) == "dead"


NODES = [{"name": "n1", "url": "unix:///run/n1.sock", "address": "198.18.15.11"},
         {"name": "n2", "url": "unix:///run/n2.sock"}]


def test_config_mode_swarm_needs_a_known_manager() -> None:
    cfg = parse_config({"nodes": NODES, "mode": "swarm", "swarm": {"manager": "n1"}})
    assert cfg.mode == "swarm" and cfg.swarm.manager == "n1" and cfg.swarm.wait == 10.0
    assert parse_config({"nodes": NODES}).mode == "docker"
    with pytest.raises(ConfigError) as err:
        parse_config({"nodes": NODES, "mode": "swarm"})
    assert "swarm.manager: mode swarm needs" in str(err.value.problems)
    with pytest.raises(ConfigError) as err:
        parse_config({"nodes": NODES, "mode": "swarm", "swarm": {"manager": "n9"}})
    assert "unknown node 'n9'" in str(err.value.problems)
    with pytest.raises(ConfigError) as err:
        parse_config({"nodes": NODES, "mode": "k8s"})
    assert "mode" in str(err.value.problems)


def test_factory_makes_the_swarm_runtime_in_swarm_mode() -> None:
    cfg = parse_config({"nodes": NODES, "mode": "swarm",
                        "swarm": {"manager": "n1", "wait": "3s"}})
    rt = make_runtime(cfg)
    assert isinstance(rt, sr.SwarmRuntime)
    assert (rt.manager, rt.wait, sorted(rt.engines.nodes)) == ("n1", 3.0, ["n1", "n2"])
    from preshift.act.docker_runtime import DockerRuntime

    assert isinstance(make_runtime(parse_config({"nodes": NODES})), DockerRuntime)


def _restoring(src_node: str, srv_address: str) -> Any:
    m = Migration(id="m-1", component="web", action="move", target_node="n3",
                  canary_name="web-m-1", phase=Phase.RESTORING, source_node="n2",
                  source_name="web.2", backend="be_web", phase_since=100.0,
                  data={"drained": True, "full_weight": 100, "progress_at": 100.0})
    src = Instance(node=src_node, name="web.2", container_id="c", component="web",
                   state="running", image="box", address="198.18.15.14", port=8080)
    servers = {"web.2": Server("web.2", srv_address, 8080, 0, "DRAIN", 0, 10, 0),
               "web-m-1": Server("web-m-1", "198.18.15.13", 8080, 100, "UP", 0, 10, 0)}
    obs = Observation(source=src, source_health="healthy", servers=servers)
    return decide(m, obs, Settings(), 101.0)


def test_a_restored_replica_on_another_node_is_re_pointed_in_haproxy() -> None:
    d = _restoring("n4", "198.18.15.12")  # back in slot 2, but on n4
    assert d.effect is not None and d.effect.action == "add_server"
    assert "198.18.15.14" in d.effect.detail
    same = _restoring("n2", "198.18.15.12")  # back on its node: no re-pointing
    assert same.effect is not None and same.effect.action != "add_server"
