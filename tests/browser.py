"""Real-browser test helpers: a live ``streamlit run app.py`` server and a headless Chromium.

Use from a test module by importing the fixtures (pytest finds them by name)::

    from tests.browser import browser_page, live_server  # noqa: F401

    @pytest.mark.browser
    def test_something(live_server, browser_page, output_dir):
        browser_page.goto(live_server.url)
        wait_for_app(browser_page)
        ...

* ``live_server``: a ``LiveServer`` with ``.url``, ``.home`` (its own fresh
  ``SYNTHLAB_HOME``), ``.settings`` and ``.log_path``. The dashboard runs with the worker
  autostarted, exactly as in production. It is stopped by its own PID (terminate, then
  kill), and so is the worker it started (found by its pid file).
* ``browser_page``: a Playwright sync ``Page`` in Debian's Chromium
  (``/usr/bin/chromium``; never ``playwright install``). Without it the test is skipped
  locally and FAILS when the ``CI`` environment variable is set.

``start_server(home, env=...)`` and ``launch_browser()`` are the same things without
pytest, for scripts (the README screenshots are taken that way).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STARTUP_TIMEOUT_S = 90
# One wait for every browser step (``expect``, locator waits, navigation, wait_for_app):
# a busy 2-core host can take tens of seconds to rerun a page, and a short default here
# is what made tests fail under load. A condition that holds returns at once, so a long
# limit costs nothing on a quiet machine. SYNTHLAB_TEST_BROWSER_TIMEOUT_S overrides it.
BROWSER_TIMEOUT_MS = int(float(os.environ.get("SYNTHLAB_TEST_BROWSER_TIMEOUT_S", "120")) * 1000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self):  # noqa: ANN201 - core.config.Settings of this server's data folder
        from core.config import Settings

        return Settings.from_env({"SYNTHLAB_HOME": str(self.home)})

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, grace_s: float = 10) -> None:
        """Terminate the server and its worker together; kill whatever outlives ``grace_s``."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=grace_s)
        stop_workers(self.home, grace_s)


def stop_workers(home: Path, grace_s: float = 10) -> None:
    """Stop the detached workers started for this data folder: SIGTERM, then SIGKILL.

    ``ensure_worker`` records the PID as it spawns, so a worker still starting up (no pid
    file of its own yet) is stopped too.
    """
    workers = _worker_pids(home)
    for pid in workers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pid in workers:
        while process_running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_running(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def process_running(pid: int) -> bool:
    """Alive and not a zombie. A worker that this test process spawned (``ensure_worker``
    called in-process) stays in /proc as a zombie after it exits until it is reaped, so
    "/proc/PID exists" alone kept every stop waiting out its whole grace period."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def poll(condition, timeout: float, what: str, interval: float = 0.02) -> float:  # noqa: ANN001
    """Wait for ``condition()`` with a deadline (a ceiling, not a pace); returns the seconds
    it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def _worker_pids(home: Path) -> list[int]:
    """The workers this server's dashboard started (their pid files name them)."""
    pids = []
    for pid_file in [*home.glob("worker-*.pid"), *home.glob("worker-*.spawned")]:
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"core worker" in cmdline:  # otherwise a recycled pid: not ours
                pids.append(pid)
    return sorted(set(pids))


def start_server(home: Path, *, env: dict[str, str] | None = None,
                 app: str = "app.py") -> LiveServer:
    """Start ``streamlit run`` on a free port with its own data folder; wait until healthy."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = home / "streamlit-server.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHLAB_")}
    full_env.update({"SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTOSTART_WORKER": "1",
                     "SYNTHLAB_WORKER_POLL_SECONDS": "0.3", "HF_HUB_OFFLINE": "1",
                     "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own app
            [sys.executable, "-m", "streamlit", "run", app, "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LiveServer(process, port, home, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"streamlit did not become healthy in {STARTUP_TIMEOUT_S}s:\n{server.log_tail()}")


def chromium_missing_reason() -> str | None:
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return None
    return f"{CHROMIUM} not found (apt-get install chromium)"


@contextlib.contextmanager
def launch_browser(viewport: tuple[int, int] = (1400, 900)) -> Iterator:
    """A fresh Playwright ``Page`` in Debian's Chromium, closed afterwards."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            # On the context, so every tab a test opens gets the same waits.
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            context.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
            page = context.new_page()
            yield page
            context.close()
        finally:
            browser.close()


# Streamlit's frontend names its script state on the app root; "notRunning" is the only
# state in which every element on the page belongs to a finished run.
_SCRIPT_IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_for_app(page, timeout_ms: int = BROWSER_TIMEOUT_MS) -> None:  # noqa: ANN001 - playwright Page
    """Wait until Streamlit has finished running the page's script, and stays finished.

    The "Running..." indicator is not enough: it shows only after a delay, so a short run
    looks idle while the browser is still replacing its elements, and a click that lands
    then can be dropped by the frontend (seen: no message ever left the browser). A run
    that an action starts begins a moment after the action, so idleness must hold for two
    looks a quarter of a second apart.
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    page.wait_for_timeout(250)
    while True:
        page.wait_for_selector(_SCRIPT_IDLE, state="attached",
                               timeout=max(1, (deadline - time.monotonic()) * 1000))
        page.wait_for_timeout(250)
        if page.locator(_SCRIPT_IDLE).count():
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the Streamlit script never finished running")


@pytest.fixture()
def live_server(tmp_path) -> Iterator[LiveServer]:
    server = start_server(tmp_path / "browser-home")
    try:
        yield server
    finally:
        # Its data folder is thrown away: no need to wait long for a graceful exit.
        server.stop(grace_s=3)


@pytest.fixture()
def browser_page() -> Iterator:
    reason = chromium_missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    with launch_browser() as page:
        yield page
