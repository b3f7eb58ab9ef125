"""`ownloop ui` and `ownloop serve` as a user runs them: real processes on loopback, stopped in
teardown, the dashboard's address printed (and opened, through $BROWSER)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ownloop import Config, Workspace
from tests.servers import child_env, free_port, start_process

URL = re.compile(r"dashboard: (http://127\.0\.0\.1:(\d+)/)")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config(home=tmp_path / "home", user="tester")
    with Workspace(config):  # the store exists before the server starts
        pass
    return config


def _ownloop() -> str:
    return str(Path(sys.executable).parent / "ownloop")


def _wait_for(log: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + 120  # a hang guard, not a timing
    while True:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return found
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no match for {pattern.pattern}: {log.read_text()}")
        time.sleep(0.05)


@contextmanager
def _ui(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_ownloop(), "ui", "--port", "0", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)


def test_ui_serves_on_loopback_prints_the_address_and_opens_it(
    config: Config, tmp_path: Path
) -> None:
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "open.py"
    opener.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    env = child_env(config, BROWSER=f"{sys.executable} {opener} %s")
    log = tmp_path / "ui.log"
    with _ui(env, log) as proc:
        url = _wait_for(log, URL, proc).group(1)
        page = httpx.get(f"{url}ui/login")
        assert page.status_code == 200 and "Sign in" in page.text
        deadline = time.monotonic() + 60
        while not (opened.exists() and opened.read_text()):
            assert time.monotonic() < deadline, "the browser was not opened"
            time.sleep(0.05)
        assert opened.read_text() == url
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the server shuts down cleanly
        proc.wait(timeout=60)
    text = log.read_text()
    assert "Application shutdown complete" in text and "Traceback" not in text


def test_ui_no_open_opens_no_browser(config: Config, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "open.py"
    opener.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    env = child_env(config, BROWSER=f"{sys.executable} {opener} %s")
    log = tmp_path / "ui.log"
    with _ui(env, log, "--no-open") as proc:
        url = _wait_for(log, URL, proc).group(1)
        assert httpx.get(f"{url}ui/static/app.css").status_code == 200
    assert not opened.exists()


def test_ui_refuses_to_serve_off_loopback(config: Config) -> None:
    result = subprocess.run(
        [_ownloop(), "ui", "--host", "0.0.0.0", "--no-open"],
        env=child_env(config),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "loopback only" in result.stderr and "ownloop serve" in result.stderr


def test_serve_prints_the_dashboard_address(config: Config, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with start_process(child_env(config), port, log=log):
        assert f"dashboard: http://127.0.0.1:{port}/" in log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/ui/login").status_code == 200
