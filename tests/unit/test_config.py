"""Configuration: valid files load, bad ones name the field and the fix, overrides apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preshift.config import DEFAULT_SIGNALS, load_config, parse_config
from preshift.durations import format_duration, parse_duration
from preshift.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = "nodes: [{name: n1, url: 'unix:///run/n1.sock'}]\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "preshift.yaml"
    p.write_text(text)
    return p


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "config.example.yaml", environ={})
    assert [n.name for n in cfg.nodes] == ["n1", "n2", "n3"]
    assert cfg.services["db"].stateful is True
    assert cfg.nodes[2].labels.rack is None  # read from the engine at run time
    assert cfg.prometheus.step == 15.0
    assert cfg.horizon == 1800.0


def test_defaults_fill_a_minimal_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), environ={})
    assert cfg.signals == DEFAULT_SIGNALS
    assert {s.scope for s in cfg.signals} == {"node", "component"}
    assert cfg.risk_tolerance == 0.2
    assert cfg.service("unknown").min_available == 1


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "PRESHIFT_RISK_TOLERANCE": "0.35",
        "PRESHIFT_PROMETHEUS__URL": "http://127.0.0.1:19090/",
        "PRESHIFT_REFRESH_INTERVAL": "5s",
        "PRESHIFT_CONFIG": "/ignored.yaml",
        "PRESHIFT_PROMETHEUS_BEARER_TOKEN": "secret",  # a secret, not an override
    }
    cfg = load_config(write(tmp_path, MINIMAL), environ=env)
    assert cfg.risk_tolerance == 0.35
    assert cfg.prometheus.url == "http://127.0.0.1:19090"
    assert cfg.refresh_interval == 5.0


def test_bad_override_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), environ={"PRESHIFT_RISK_TOLERANCE": "1.5"})
    assert "risk_tolerance" in str(err.value)
    assert "less than 1" in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes: []\n", "nodes: needs at least 1 entry"),
        (
            MINIMAL + "signals: [{name: Bad, scope: node, query: x, limit: 1}]\n",
            "signals[0].name: use lowercase",
        ),
        ("services: {}\n", "nodes: required field is missing"),
        (MINIMAL + "risk_tolrance: 0.3\n", "risk_tolrance: unknown field; allowed here:"),
        (MINIMAL + "horizon: soon\n", "horizon: 'soon' is not a duration"),
        (MINIMAL + "horizon: 0\n", "horizon: must be greater than 0"),
        ("nodes: [{name: n1, url: 'http//x'}]\n", "nodes[0].url: must be a Docker engine URL"),
        ("nodes: [{name: n1, url: 'unix:///a'}, {name: n1, url: 'unix:///b'}]\n", "duplicate node"),
        (MINIMAL + "services: {web: {depends_on: [db]}}\n", "services.web.depends_on: unknown"),
        (MINIMAL + "services: {web: {min_available: -1}}\n", "services.web.min_available"),
        (
            MINIMAL + "signals: [{name: t, scope: host, query: x, limit: 1}]\n",
            "signals[0].scope: Input should be 'node' or 'component'",
        ),
        (
            MINIMAL + "signals: [{name: t, scope: node, query: x, limit: 1, weight: 2}]\n",
            "signals[0].weight",
        ),
        (MINIMAL + "prometheus: {url: 'ftp://x'}\n", "prometheus.url: must be an http://"),
        (MINIMAL + "prometheus: {token: abc}\n", "prometheus.token: unknown field"),
        (MINIMAL + "exporter: {listen: '9731'}\n", "exporter.listen: must be HOST:PORT"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("nodes: [\n", "not valid YAML at line 2"),
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/preshift.yaml", environ={})


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), environ={})
    with pytest.raises(ValueError):
        cfg.risk_tolerance = 0.9  # type: ignore[misc]


def test_cli_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, MINIMAL + "risk_tolerance: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "preshift.cli", "config", "check", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "risk_tolerance" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_parse_config_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["x"])


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_duration_roundtrip_of_numbers(x: float) -> None:
    assert parse_duration(x) == x
    assert parse_duration(str(x)) == pytest.approx(x)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("15s", 15), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1w", 604800)],
)
def test_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "-3s", True, None, "1h30"])
def test_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert format_duration(90) == "1m30s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(3600) == "1h"


def test_max_plan_age_follows_the_refresh_interval_and_is_checked() -> None:
    base = {"nodes": [{"name": "n1", "url": "unix:///run/n1.sock"}]}
    assert parse_config(base).plan_age_limit() == 60.0  # 4 × 15 s is below the 60 s floor
    assert parse_config({**base, "refresh_interval": "30s"}).plan_age_limit() == 120.0
    assert parse_config({**base, "migration": {"max_plan_age": "90s"}}).plan_age_limit() == 90
    example = load_config(ROOT / "config.example.yaml", environ={})
    assert example.migration.max_plan_age == 60.0
    for bad, says in [("10s", "must exceed refresh_interval"), (0, "greater than 0"),
                      ("soon", "not a duration")]:
        with pytest.raises(ConfigError) as err:
            parse_config({**base, "migration": {"max_plan_age": bad}})
        assert "migration.max_plan_age" in str(err.value) and says in str(err.value), bad


def test_config_show_hides_url_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from preshift.config_cli import config_group

    monkeypatch.delenv("PRESHIFT_PROMETHEUS_URL", raising=False)
    path = write(tmp_path, MINIMAL + "prometheus: {url: 'http://ops:s3cr%40t@prom:9090'}\n")
    out = CliRunner().invoke(config_group, ["show", str(path)])
    assert out.exit_code == 0, out.output
    assert "s3cr" not in out.output and "http://ops:***@prom:9090" in out.output
