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


# -- the image runs as non-root; nothing privileged, no secret baked in ------------------------
# (static checks: the base image cannot be pulled here, so the image itself is not built)

#: Services allowed to start as root, and why. Anything else found as root fails.
ROOT_ALLOWED = {
    "haproxy": "the upstream image starts as root only to create its admin socket for UID "
               "10001; haproxy.cfg's global `user haproxy` then drops privileges",
}
_SECRET_KEY = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEY|PRIVATE_KEY)", re.I)


def _final_stage(dockerfile: str) -> list[str]:
    """The instructions of the last stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and
             not ln.strip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def test_the_image_runs_as_a_non_root_uid() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    stage = _final_stage(text)
    users = [ln.split(None, 1)[1] for ln in stage if ln.upper().startswith("USER ")]
    assert users, "the final stage sets no USER: the image would run as root"
    user = users[-1].split(":")[0]
    # after the last USER nothing may switch back (a RUN as root after it is fine: build time)
    if user.isdigit():
        uid = int(user)
    else:  # a name: the useradd of the same stage gives its UID (an ARG with a default)
        add = next(ln for ln in stage if "useradd" in ln and re.search(rf"\b{user}\b", ln))
        ref = re.search(r"--uid\s+\"?\$\{?(\w+)\}?\"?", add)
        assert ref is not None, add
        arg = re.search(rf"^ARG {ref[1]}=(\d+)$", "\n".join(stage), re.M)
        assert arg is not None, f"ARG {ref[1]} has no numeric default"
        uid = int(arg[1])
    assert uid != 0 and user not in ("root", "0"), users


def test_no_secret_is_baked_into_the_image() -> None:
    stage = _final_stage((COMPOSE / "Dockerfile").read_text())
    for ln in stage:
        word, _, rest = ln.partition(" ")
        if word.upper() in ("ENV", "ARG", "LABEL"):
            for key, _, value in re.findall(r"(\w+)(=|\s)(\S*)", rest):
                assert not _SECRET_KEY.search(key) or not value, ln
        if word.upper() in ("COPY", "ADD"):
            assert "secret" not in rest.lower() and ".token" not in rest, ln
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "compose/secrets" in ignored and "**/*.token" in ignored


def _services() -> list[tuple[str, str, dict]]:
    out = []
    for name in ("docker-compose.yml", "preshift-stack.yml"):
        for svc, spec in (_load(name).get("services") or {}).items():
            out.append((name, svc, spec or {}))
    return out


def test_no_service_is_privileged_or_root_unless_allowed() -> None:
    found_root = set()
    for file, svc, spec in _services():
        where = f"{file}: {svc}"
        assert spec.get("privileged") is not True, where
        assert not {"ALL", "SYS_ADMIN", "NET_ADMIN"} & set(spec.get("cap_add") or ()), where
        assert spec.get("pid") != "host" and spec.get("ipc") != "host", where
        assert not any("unconfined" in str(o) for o in spec.get("security_opt") or ()), where
        user = str(spec.get("user", "")).split(":")[0]
        if user in ("root", "0"):
            assert svc in ROOT_ALLOWED, f"{where} runs as root: {user}"
            found_root.add(svc)
        elif user:
            assert not user.startswith("$"), where  # a UID chosen at deploy time could be 0
    assert found_root <= set(ROOT_ALLOWED)
    # the one allowed root start drops to an unprivileged user at once
    glob = (COMPOSE / "haproxy.cfg").read_text().split("\ndefaults", 1)[0]
    assert re.search(r"^\s+user haproxy$", glob, re.M) and re.search(r"^\s+group haproxy$",
                                                                    glob, re.M)
    # Preshift's own services never override the image's user with root
    ours = [(f, s, spec) for f, s, spec in _services() if s in ("exporter", "webhook")]
    assert len(ours) >= 4, ours


def test_no_secret_value_is_written_in_the_compose_files() -> None:
    for file, svc, spec in _services():
        env = spec.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (
            e.partition("=")[::2] for e in env)
        for key, value in items:
            if _SECRET_KEY.search(str(key)) and value not in (None, ""):
                # a file name (Docker secret) or a value taken from the deployer's env only
                assert str(key).endswith("_FILE") or str(value).startswith("${"), \
                    f"{file}: {svc}: {key}"
    cfg = _load("preshift.yml")
    webhook = cfg.get("webhook") or {}
    assert "token" not in webhook and "basic_password" not in webhook, webhook
    assert webhook.get("token_file", "").startswith("/run/secrets/")
