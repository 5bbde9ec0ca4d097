"""The status page in a REAL headless Chromium (Debian's chromium + chromium-driver, driven by
selenium), served by real gunicorn (`preshift webhook serve`) on 127.0.0.1:19751, with a tiny
local http.server on 127.0.0.1:19752 standing for the exporter. Everything stays on loopback:
Chromium is told to resolve no other host. A migration waits in awaiting_approval (created
directly in the journal; `webhook.testing:idle_factory` leaves it alone). The test logs in
with the token, sees the footprint and the migration, clicks Approve and checks the journal.
The screenshot is kept under pytest's tmp dir (its path is printed).
Needs neither root nor the testbed; only the processes it starts are stopped, by PID.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from preshift.act.journal import Journal, Migration
from preshift.act.phases import Phase

from .stack import Process, port_open, preshift_argv, wait_for

selenium = pytest.importorskip("selenium", reason="pip install -e '.[test]' (selenium)")

from selenium import webdriver  # noqa: E402 (after the importorskip)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

HOST, PORT, EXPORTER_PORT = "127.0.0.1", 19751, 19752
TOKEN = "browser-token"
HOSTILE = "<script>alert(1)</script>"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

FOOTPRINT = {
    "version": 1, "generated_at": 1750000000.0, "stale": False,
    "nodes": [
        {"name": "n1", "host": "h1", "rack": "r1", "site": "dc1", "reachable": True,
         "stale": False, "engine_id": "E1", "error": None},
        {"name": "n2", "host": "h2", "rack": "r2", "site": "dc1", "reachable": True,
         "stale": False, "engine_id": "E2", "error": None},
        {"name": "n3", "host": "h3", "rack": "r3", "site": "dc2", "reachable": False,
         "stale": True, "engine_id": "E3", "error": "cannot connect to the Docker engine"},
    ],
    "components": {
        "web": {"replicas": [
            {"name": "web-1", "node": "n1", "state": "running", "health": "healthy"},
            {"name": "web-2", "node": "n2", "state": "running", "health": "healthy"}]},
        "cache": {"replicas": [
            {"name": "cache-1", "node": "n1", "state": "running", "health": None}]},
        HOSTILE: {"replicas": [
            {"name": "odd-1", "node": "n2", "state": "running", "health": None}]},
    },
    "scores": {
        "replicas": [
            {"replica": "web-1", "component": "web", "node": "n1", "hps": 41.7,
             "top_signal": "temperature"},
            {"replica": "cache-1", "component": "cache", "node": "n1", "hps": 86.0,
             "top_signal": None},
            {"replica": "web-2", "component": "web", "node": "n2", "hps": 97.4,
             "top_signal": None},
            {"replica": "odd-1", "component": HOSTILE, "node": "n2", "hps": 95.0,
             "top_signal": None},
        ],
        "nodes": {"n1": {"hps": 49.6}, "n2": {"hps": 98.0}, "n3": {"hps": 0.0}},
    },
    "plan": {"tolerance": 0.2, "stale": False, "entries": [
        {"action": "move", "component": "web", "replica": "web-1", "from_node": "n1",
         "to_node": "n2", "reason": "risk 0.58 > tolerance 0.20, mostly environment",
         "hps": 41.7, "target_hps": 97.0}], "held": []},
}


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/api/v1/footprint":
            self.send_error(404)
            return
        body = json.dumps(FOOTPRINT).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((HOST, EXPORTER_PORT), _Exporter)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://{HOST}:{EXPORTER_PORT}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory, exporter: str) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("status-page")
    journal = d / "journal.sqlite3"
    with Journal(journal) as j:
        j.create_migration(Migration(
            id="m1a2b3c4", component="web", action="move", source_node="n1",
            source_name="web-1", target_node="n2", canary_name="web-1-c",
            phase=Phase.AWAITING_APPROVAL, approval="pending", weight=0, step=0,
            reason="risk 0.58 > tolerance 0.20, mostly environment (temperature)"))
    cfg = d / "preshift.yaml"
    cfg.write_text(
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]\n"
        f"webhook: {{journal: '{journal}', exporter_url: '{exporter}', tick: 0.1s}}\n"
    )
    proc = Process(
        preshift_argv("webhook", "serve", "--config", str(cfg), "--workers", "2",
                      "--listen", f"{HOST}:{PORT}"),
        d / "webhook.log",
        env={"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
             "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "webhook.testing:idle_factory"},
    ).start()
    try:
        def up() -> bool:
            if not proc.running:
                raise AssertionError(f"webhook exited early:\n{proc.tail()}")
            return port_open(HOST, PORT)

        wait_for(up, 30, "gunicorn to listen")
        yield journal
    finally:
        code = proc.stop()
        assert code == 0, proc.tail()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM and CHROMEDRIVER):  # a skip would prove nothing: fail with the fix
        pytest.fail("chromium and chromedriver are missing: scripts/bootstrap installs them")
    # Selenium Manager (which could try to download a driver) is never needed: both paths
    # are given. These keep it offline and silent should a version of selenium call it anyway.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox",  # root in a container: no user namespace sandbox
        "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100",
        f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--metrics-recording-only",
        # loopback only: every other host name resolves to nothing
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()  # ends chromedriver and the browser it started


def test_login_see_footprint_and_approve(webhook: Path, browser: webdriver.Chrome,
                                         tmp_path: Path) -> None:
    base = f"http://{HOST}:{PORT}"
    browser.get(f"{base}/")
    # not logged in: 401 with the login form (bearer only: no basic dialog)
    assert browser.find_element(By.ID, "login-form")
    assert "m1a2b3c4" not in browser.page_source
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-submit").click()
    wait_for(lambda: browser.find_elements(By.ID, "migration-m1a2b3c4"), 10,
             f"the status page (now {browser.current_url}: {browser.page_source[:1500]})")

    cookie = browser.get_cookie("preshift_status")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    text = browser.find_element(By.TAG_NAME, "body").text
    for expected in ("site dc1", "rack r1", "site dc2", "web-1", "41.7", "cache-1",
                     "Lowest scores", "awaiting_approval", "unreachable"):
        assert expected in text, expected
    # a hostile component name shows as text; nothing ran (an alert would block the driver)
    assert HOSTILE in text
    assert browser.find_elements(By.TAG_NAME, "script") == []
    row = browser.find_element(By.ID, "migration-m1a2b3c4")
    assert "risk-high" in browser.find_element(
        By.XPATH, "//li[contains(@class,'replica')][.//span[text()='web-1']]"
    ).get_attribute("class")

    shot = tmp_path / "status-page.png"
    row.find_element(By.ID, "approve-m1a2b3c4").click()
    wait_for(lambda: browser.find_elements(By.ID, "flash"), 10, "the page after approve")
    assert "approve of migration m1a2b3c4 recorded" in browser.find_element(By.ID, "flash").text
    with Journal(webhook) as j:
        m = j.get("m1a2b3c4")
        assert m is not None and m.request == "approve"
        assert j.steps("m1a2b3c4")[-1].action == "request approve"
    assert "approve" in browser.find_element(
        By.CSS_SELECTOR, "#migration-m1a2b3c4 td.request").text
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")
