"""A real web server (daphne) on the test database, beside the real cluster, and Debian's Chromium."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, database_url_for_subprocess

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "a-long-journey-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebServer:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.log_path = log_path
        self.proc = subprocess.Popen(
            # The server `manage.py serve` runs: daphne with backpressure.
            [
                sys.executable,
                "-m",
                "spawner.webserver",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "spawner.asgi:application",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/login/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def workdir(tmp_path):
    """Where batches launched from the browser run (SPAWNER_WORKDIR of the web server)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def web(cluster, workdir, tmp_path):
    """daphne serving spawner.asgi on a free port, on this test's database."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_WORKDIR": str(workdir),
        "SPAWNER_LOG_DIR": cluster.env["SPAWNER_LOG_DIR"],
        # Worktrees of batches launched from the browser live in this test's directory too (a batch
        # id reused by the next test database must not find the last one's worktrees).
        "SPAWNER_WORKSPACE_DIR": cluster.env["SPAWNER_WORKSPACE_DIR"],
    }
    server = WebServer(env, tmp_path / "daphne.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def shots(request):
    """save(page, name): a screenshot in test-artifacts/, named after the test and the step."""
    ARTIFACTS.mkdir(exist_ok=True)
    count = iter(range(1, 100))

    def save(page, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{next(count):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture
def alice(transactional_db):
    """Signs in through the page; may launch batches (and so retry runs), resolve escalations and review."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("alice", password=PASSWORD)
    codenames = ["add_batch", "resolve_escalation", "review_batch"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="spawner"))
    return user


def expect_no_reload(page) -> None:
    """Mark the document; the mark survives only if the page was never reloaded."""
    page.evaluate("window.__sameDocument = true")


def still_same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def sign_in(page, url: str, shots=None) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login/"))
    if shots:
        shots(page, "sign-in")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Sign in')")
    expect(page.get_by_role("heading", name="Batches")).to_be_visible()
    assert page.evaluate("typeof htmx") == "object", "htmx did not load from the static files"
