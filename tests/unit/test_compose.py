"""The compose and Swarm stack files (compose/) are valid for the tools that read them.

Nothing here talks to a Docker engine or pulls an image: `docker-compose config` only reads
and validates the files. A missing tool skips its test (scripts/bootstrap installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
STACK = {"prometheus", "alertmanager", "grafana", "exporter", "webhook", "haproxy"}

# What the files interpolate (docker-compose.yml: DOCKER_GID; the stack file: more).
COMPOSE_ENV = {"DOCKER_GID": "999"}
STACK_ENV = {
    "DOCKER_GID": "999",
    "PRESHIFT_MANAGER": "manager1",
    "PRESHIFT_WEB_1_ADDR": "10.0.0.11:8081",
    "PRESHIFT_WEB_2_ADDR": "10.0.0.12:8081",
}


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/bootstrap installs it)")
    return path


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRESHIFT_", "DOCKER_", "COMPOSE_"))}
    env.update(extra)
    # never an engine: point DOCKER_HOST at nothing in case a subcommand tried
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return env


def _compose_config(file: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("docker-compose"), "-f", file, "config", "-q"],
        capture_output=True, text=True, timeout=60, cwd=COMPOSE, env=_env(extra),
    )


def _load(name: str) -> dict:
    return yaml.safe_load((COMPOSE / name).read_text())


def test_docker_compose_file_is_valid() -> None:
    proc = _compose_config("docker-compose.yml", COMPOSE_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr


def test_docker_compose_file_needs_the_docker_gid() -> None:
    proc = _compose_config("docker-compose.yml", {})
    assert proc.returncode != 0
    assert "DOCKER_GID" in proc.stderr


def test_docker_compose_file_wires_the_stack() -> None:
    doc = _load("docker-compose.yml")
    services = doc["services"]
    assert set(services) >= STACK
    webhook = services["webhook"]
    assert "webhook_token" in webhook["secrets"]
    assert "webhook_token" in services["alertmanager"]["secrets"]
    assert "haproxy-run:/run/haproxy" in webhook["volumes"]
    assert "haproxy-run:/run/haproxy" in services["haproxy"]["volumes"]
    assert "journal:/var/lib/preshift" in webhook["volumes"]
    dry_run = webhook["environment"]["PRESHIFT_MIGRATION__DRY_RUN"]
    assert dry_run == "${PRESHIFT_MIGRATION__DRY_RUN:-true}"
    assert doc["secrets"]["webhook_token"]["file"].endswith("/webhook-token")
    # no token inline anywhere
    text = (COMPOSE / "docker-compose.yml").read_text()
    assert "PRESHIFT_WEBHOOK_TOKEN:" not in text and "PRESHIFT_WEBHOOK_TOKEN=" not in text


def test_stack_file_has_what_swarm_needs() -> None:
    doc = _load("preshift-stack.yml")
    assert re.fullmatch(r"3(\.\d+)?", str(doc["version"])), doc["version"]
    services = doc["services"]
    assert set(services) >= STACK
    for name in ("exporter", "webhook"):
        svc = services[name]
        assert svc["environment"]["PRESHIFT_MODE"] == "swarm"
        assert "PRESHIFT_SWARM__MANAGER" in svc["environment"]
        deploy = svc["deploy"]
        assert "node.role == manager" in deploy["placement"]["constraints"]
        assert deploy["update_config"]["order"] == "start-first"
        assert deploy["restart_policy"]["condition"] in ("any", "on-failure")
    for name, svc in services.items():
        assert "build" not in svc, f"{name}: docker stack deploy ignores build"
        assert "restart_policy" in svc["deploy"], name
        assert svc["deploy"]["update_config"]["order"] == "start-first", name
        for port in svc.get("ports", []):
            assert isinstance(port, dict) and port["mode"] == "host", f"{name}: {port}"
    assert doc["networks"]["preshift"]["driver"] == "overlay"
    # secrets are Swarm secrets, mounted where the configuration and Alertmanager read them
    assert doc["secrets"]["preshift_webhook_token"]["external"] is True
    targets = {s["target"] for s in services["webhook"]["secrets"]}
    assert targets == {"webhook_token"}
    assert {s["target"] for s in services["alertmanager"]["secrets"]} == {"webhook_token"}


def test_stack_file_passes_docker_compose_config() -> None:
    """docker-compose 1.29 accepts the stack file too (it warns that it ignores `configs`)."""
    proc = _compose_config("preshift-stack.yml", STACK_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_config_syntax() -> None:
    proc = subprocess.run(
        [_tool("promtool"), "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_config_with_the_rules(tmp_path: Path) -> None:
    """A copy whose rule_files point at the repository's rules/: the full check, rules included."""
    doc = _load("prometheus.yml")
    assert doc["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    doc["rule_files"] = [str(ROOT / "rules" / "*.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [_tool("promtool"), "check", "config", str(copy)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rules found" in proc.stdout
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in doc["scrape_configs"]}
    assert jobs["preshift"] == ["exporter:9731"]          # the job names rules/ alert on
    assert jobs["preshift-webhook"] == ["webhook:9733"]
    assert jobs["haproxy"] == ["haproxy:8405"]


@pytest.mark.parametrize("env", [
    {},
    {"PRESHIFT_WEB_1_NAME": "web.1", "PRESHIFT_WEB_1_ADDR": "10.0.0.11:8081",
     "PRESHIFT_WEB_2_NAME": "web.2", "PRESHIFT_WEB_2_ADDR": "10.0.0.12:8081"},
], ids=["compose-defaults", "swarm-env"])
def test_haproxy_config_is_valid(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [_tool("haproxy"), "-c", "-f", str(COMPOSE / "haproxy.cfg")],
        capture_output=True, text=True, timeout=60, env=_env(env),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr


def test_haproxy_config_gives_the_webhook_its_admin_socket() -> None:
    text = (COMPOSE / "haproxy.cfg").read_text()
    cfg = yaml.safe_load((COMPOSE / "preshift.yml").read_text())
    socket = re.escape(cfg["traffic"]["socket"])
    assert re.search(rf"stats socket {socket} .*level admin .*uid 10001", text)
    assert "use-service prometheus-exporter" in text
    assert "backend be_web" in text and cfg["traffic"]["backends"]["web"] == "be_web"
    assert "USER preshift" in (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"--uid \"\$\{PRESHIFT_UID\}\"", (COMPOSE / "Dockerfile").read_text())
    assert re.search(r"ARG PRESHIFT_UID=10001", (COMPOSE / "Dockerfile").read_text())


def test_alertmanager_config_is_valid() -> None:
    path = COMPOSE / "alertmanager.yml"
    proc = subprocess.run(
        [_tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    routed = subprocess.run(
        [_tool("amtool"), "config", "routes", "test", f"--config.file={path}",
         "alertname=PreshiftFootprintDiscrepancy", "preshift_action=migrate", "component=web"],
        capture_output=True, text=True, timeout=60,
    )
    assert routed.stdout.strip() == "preshift-webhook", routed.stdout + routed.stderr
    doc = yaml.safe_load(path.read_text())
    receiver = next(r for r in doc["receivers"] if r["name"] == "preshift-webhook")
    hook = receiver["webhook_configs"][0]
    assert hook["url"] == "http://webhook:9733/api/v1/alerts"
    assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/webhook_token"


def test_preshift_config_loads() -> None:
    from preshift.config import load_config

    env = {"PRESHIFT_WEBHOOK_TOKEN": "test-token"}
    cfg = load_config(COMPOSE / "preshift.yml", environ=env)
    assert cfg.migration.dry_run is True
    assert cfg.mode == "docker"
    assert str(cfg.webhook.token_file) == "/run/secrets/webhook_token"
    assert str(cfg.webhook.journal).startswith("/var/lib/preshift/")
    assert cfg.webhook.exporter_url == "http://exporter:9731"
    assert cfg.prometheus.url == "http://prometheus:9090"
    assert cfg.traffic.kind == "haproxy"
    # the overrides the compose and stack files set
    live = load_config(COMPOSE / "preshift.yml", environ={
        **env, "PRESHIFT_MIGRATION__DRY_RUN": "false",
        "PRESHIFT_MODE": "swarm", "PRESHIFT_SWARM__MANAGER": "local",
    })
    assert live.migration.dry_run is False
    assert live.mode == "swarm" and live.swarm.manager == "local"


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "compose/secrets"} <= lines
