"""The admin page's worker controls: status and restart of a real worker process."""

from __future__ import annotations

from core.users import audit
from core.users.server import restart_worker, worker_status
from tests.crashjobs import stop_dashboard_worker


def test_restart_worker_starts_a_fresh_one_and_is_audited(settings):
    assert not worker_status(settings).alive
    try:
        first = restart_worker(settings, actor="root")  # none running: just starts one
        assert first.alive and first.pid
        second = restart_worker(settings, actor="root")
        assert second.alive and second.pid and second.pid != first.pid
        assert worker_status(settings).pid == second.pid
    finally:
        stop_dashboard_worker(settings.home_path)
    assert not worker_status(settings).alive
    entries = audit.entries(action="restart_worker", settings=settings)
    assert [e.actor for e in entries] == ["root", "root"]
    assert entries[0].detail == {"old_pid": first.pid}
