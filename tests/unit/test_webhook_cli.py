"""`preshift migrations ...` against the app served over real HTTP on 127.0.0.1:19748, and
`preshift webhook serve`'s refusals (the serving itself is in the integration test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from preshift.act.journal import Journal, Migration
from preshift.act.phases import Phase
from preshift.cli import main

from .webhook_support import TOKEN, make_app

PORT = 19748
URL = f"http://127.0.0.1:{PORT}"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    app = make_app(tmp_path)
    server = make_server("127.0.0.1", PORT, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("PRESHIFT_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.delenv("PRESHIFT_CONFIG", raising=False)
    try:
        yield app
    finally:
        server.shutdown()
        t.join(5)


def add(app: Flask, mid: str, **kw: object) -> None:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        j.create_migration(Migration(id=mid, component="web", action="scale_up",
                                     target_node="n2", canary_name=f"web-{mid}", **kw))  # type: ignore[arg-type]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["migrations", "--url", URL, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show(served: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list") == (0, "no migrations\n", "")
    add(served, "abcd0001")
    code, out, _ = run(capsys, "list", "--active")
    assert code == 0 and "abcd0001" in out and "planned" in out and "ID" in out
    code, out, _ = run(capsys, "show", "abcd0001")
    assert code == 0 and "migration abcd0001: scale_up of web" in out and "steps (1)" in out
    code, out, _ = run(capsys, "show", "abcd0001", "--json")
    assert code == 0 and '"phase": "planned"' in out


def test_exit_codes(served: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    add(served, "abcd0001")
    code, _, err = run(capsys, "show", "nope")
    assert code == 2 and err.startswith("error: no migration 'nope'")
    code, _, err = run(capsys, "show", "../etc")
    assert code == 2 and "not a migration id" in err
    code, _, err = run(capsys, "approve", "abcd0001")
    assert code == 1 and "not waiting for approval" in err
    code, out, _ = run(capsys, "abort", "abcd0001")
    assert code == 0 and "abort recorded" in out
    code, _, err = run(capsys, "list", "--limit", "0")
    assert code == 2 and "--limit" in err
    assert "Traceback" not in err


def test_credentials_and_reachability(served: Flask, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PRESHIFT_WEBHOOK_TOKEN")
    code, _, err = run(capsys, "list")
    assert code == 1 and "refused the credentials" in err
    (tmp_path / "tok").write_text(TOKEN + "\n")
    code, _, _ = run(capsys, "--token-file", str(tmp_path / "tok"), "list")
    assert code == 0
    assert main(["migrations", "--url", "http://127.0.0.1:19747", "list"]) == 1
    assert "cannot reach the webhook" in capsys.readouterr().err
    assert main(["migrations", "--url", "ftp://x", "list"]) == 2
    assert main(["migrations", "list"]) == 2  # neither --url nor --config
    assert "give --url URL, or --config PATH" in capsys.readouterr().err


def test_url_from_the_configuration(served: Flask, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("nodes: [{name: n1, url: 'unix:///x.sock'}]\n"
                   f"webhook: {{listen: '0.0.0.0:{PORT}'}}\n")
    assert main(["migrations", "--config", str(cfg), "list"]) == 0


def _drive(app: Flask, mid: str, phases: list[Phase], weights: dict[Phase, int]) -> None:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        for p in phases:
            time.sleep(0.08)
            m = j.get(mid)
            assert m is not None
            m = j.update(m, phase=p, weight=weights.get(p, m.weight))
            if p == Phase.SHIFTING:
                sid = j.begin_step(m, "set_weight", "50%")
                time.sleep(0.08)
                j.end_step(sid, "ok")
                j.update(m, weight=100)


@pytest.mark.parametrize(("end", "code"), [(Phase.SUCCEEDED, 0), (Phase.ROLLING_BACK, 1)])
def test_watch_follows_until_terminal(served: Flask, capsys: pytest.CaptureFixture[str],
                                      end: Phase, code: int) -> None:
    add(served, "abcd0001")
    phases = [Phase.STARTING, Phase.HEALTH_CHECK, Phase.ROUTING, Phase.SHIFTING, Phase.PROMOTED]
    phases += [Phase.SUCCEEDED] if end == Phase.SUCCEEDED else [Phase.ROLLING_BACK,
                                                                 Phase.ROLLED_BACK]
    t = threading.Thread(target=_drive, args=(served, "abcd0001", phases,
                                               {Phase.SHIFTING: 50}))
    t.start()
    got, out, err = run(capsys, "watch", "abcd0001", "--interval", "0.02")
    t.join()
    assert got == code, err
    for p in phases:
        assert f"phase {p}" in out, (p, out)
    assert "weight 50%" in out and "set_weight" in out
    assert out.rstrip().endswith("succeeded" if code == 0 else "rolled_back (not a success)")


def test_serve_refuses_without_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRESHIFT_WEBHOOK_TOKEN", raising=False)
    monkeypatch.delenv("PRESHIFT_WEBHOOK_PASSWORD", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("nodes: [{name: n1, url: 'unix:///x.sock'}]\n")
    assert main(["webhook", "serve", "--config", str(cfg)]) == 2
    assert "no authentication configured" in capsys.readouterr().err
    monkeypatch.setenv("PRESHIFT_WEBHOOK_TOKEN", "x")
    assert main(["webhook", "serve", "--config", str(cfg), "--listen", "nope"]) == 2
    assert "--listen 'nope'" in capsys.readouterr().err
    assert main(["webhook", "serve", "--config", str(tmp_path / "missing.yaml")]) == 2
