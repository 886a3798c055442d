"""Sign-in rate limit under a burst: however many sign-ins for one name arrive at once,
from threads or from separate processes, on SQLite or PostgreSQL, at most
``login_max_failures`` passwords are checked in a window (issue 13, point 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.config import Settings
from core.db.engine import init_db, session_scope
from core.users import accounts
from core.users.models import LoginAttempt
from tests.loginrace import race
from tests.test_postgres import pg_settings, postgres_server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
NAME, PASSWORD = "dana", "danas-password"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request) -> Settings:
    """The same tests on the embedded SQLite file and on a real PostgreSQL server."""
    settings = request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")
    init_db(settings)
    accounts.add_user(NAME, PASSWORD, settings=settings)
    return settings


def _recorded_attempts(settings: Settings) -> int:
    with session_scope(settings) as session:
        return int(session.scalar(select(func.count()).select_from(LoginAttempt)
                                  .where(LoginAttempt.name == NAME)))


def _assert_limit_held(settings: Settings, outcomes: list[str], tried: int) -> None:
    limit = settings.login_max_failures
    assert len(outcomes) == tried
    # Before the fix every attempt read "fewer than the limit" before any had been
    # recorded, so all of them were checked.
    assert outcomes.count("wrong") == limit, outcomes
    assert outcomes.count("locked") == tried - limit
    assert _recorded_attempts(settings) == limit
    # The right password now waits out the window like any other.
    with pytest.raises(accounts.LoginRefused, match="too many failed sign-in attempts"):
        accounts.authenticate(NAME, PASSWORD, settings)


def test_a_burst_of_threads_checks_at_most_the_limit(db: Settings) -> None:
    outcomes = race(NAME, ["wrong-guess"] * 40)
    _assert_limit_held(db, outcomes, 40)


def test_a_burst_from_several_processes_checks_at_most_the_limit(db: Settings) -> None:
    env = {**os.environ, "SYNTHLAB_HOME": str(db.home_path), "SYNTHLAB_DB_URL": db.db_url}
    # 2 x 8: the 16 sign-ins of the report, from two server processes.
    processes = [subprocess.Popen([sys.executable, "-m", "tests.loginrace", NAME, "wrong-guess",
                                   "8"], cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    try:
        for process in processes:  # every process imported, connected, threads waiting
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes: list[str] = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-2000:]
            outcomes += json.loads(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    _assert_limit_held(db, outcomes, 16)


def test_a_success_still_clears_earlier_failures(settings: Settings) -> None:
    accounts.add_user(NAME, PASSWORD, settings=settings)
    for _ in range(settings.login_max_failures - 1):
        with pytest.raises(accounts.LoginRefused, match="wrong"):
            accounts.authenticate(NAME, "wrong-guess", settings)
    assert accounts.authenticate(NAME, PASSWORD, settings).name == NAME
    assert accounts.recent_failures(NAME, settings)[0] == 0
    with pytest.raises(accounts.LoginRefused, match="wrong"):
        accounts.authenticate(NAME, "wrong-guess", settings)
