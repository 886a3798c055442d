"""Concurrent writers on one SQLite file: SynthLab's engine vs a naive sqlite3 setup.

    python bench/concurrent_writes.py                  # 4 processes x 300 updates each
    python bench/concurrent_writes.py --procs 8 --n 200

Each process plays a busy browser session or worker: read a job's progress, then write it
back incremented, plus a log line, in one short transaction; repeated ``--n`` times.

- Naive baseline: Python ``sqlite3`` defaults (rollback journal, deferred transactions
  opened only at the first write, a 0.5 s timeout): the read runs outside the write's
  transaction, so concurrent increments are lost, and colliding writers get "database is
  locked".
- SynthLab: ``core.db.engine.run_write`` (WAL, ``BEGIN IMMEDIATE``, 60 s busy timeout,
  retry on lock).

Printed: writes that succeeded, "database is locked" errors that reached the caller, lost
increments (successful writes minus the final progress), wall time of the writing, kept
increments per second, and their ratio (SynthLab / naive). The ratio swings with machine
load; the point is the zero in the locked and lost columns.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _naive_worker(db_path: str, n: int, queue: mp.Queue, ready, go) -> None:  # noqa: ANN001
    ok = locked = 0
    conn = sqlite3.connect(db_path, timeout=0.5, isolation_level="DEFERRED")
    ready.release()
    go.wait()
    for i in range(n):
        try:
            done = conn.execute("SELECT progress_done FROM jobs WHERE id = 1").fetchone()[0]
            conn.execute("UPDATE jobs SET progress_done = ? WHERE id = 1", (done + 1,))
            conn.execute("INSERT INTO job_events (job_id, at, level, message) "
                         "VALUES (1, datetime('now'), 'info', ?)", (f"step {i}",))
            conn.commit()
            ok += 1
        except sqlite3.OperationalError as exc:
            conn.rollback()
            if "locked" not in str(exc):
                raise
            locked += 1
    conn.close()
    queue.put((ok, locked, time.perf_counter()))


def _synthlab_worker(home: str, n: int, queue: mp.Queue, ready, go) -> None:  # noqa: ANN001
    os.environ["SYNTHLAB_HOME"] = home
    from sqlalchemy import select, update
    from sqlalchemy.exc import OperationalError

    from core.config import get_settings
    from core.db.engine import run_write
    from core.db.models import Job, JobEvent

    settings = get_settings()
    run_write(lambda session: None, settings)  # connect and migrate-check before the clock
    ok = locked = 0
    ready.release()
    go.wait()
    for i in range(n):
        def write(session, i=i):  # noqa: ANN001
            done = session.scalar(select(Job.progress_done).where(Job.id == 1))
            session.execute(update(Job).where(Job.id == 1).values(progress_done=done + 1))
            session.add(JobEvent(job_id=1, message=f"step {i}"))
        try:
            run_write(write, settings)
            ok += 1
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            locked += 1
    queue.put((ok, locked, time.perf_counter()))


def _run(target, arg: str, procs: int, n: int) -> tuple[int, int, float]:  # noqa: ANN001
    """Start the processes, let them import and connect, then time the writing only."""
    queue: mp.Queue = mp.Queue()
    ready, go = mp.Semaphore(0), mp.Event()
    workers = [mp.Process(target=target, args=(arg, n, queue, ready, go)) for _ in range(procs)]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    start = time.perf_counter()
    go.set()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return (sum(r[0] for r in results), sum(r[1] for r in results),
            max(r[2] for r in results) - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--n", type=int, default=300, help="updates per process")
    args = parser.parse_args()
    mp.set_start_method("spawn")

    with tempfile.TemporaryDirectory(prefix="synthlab-bench-") as tmp:
        home = Path(tmp) / "synthlab"
        os.environ["SYNTHLAB_HOME"] = str(home)
        from core.config import get_settings
        from core.db.engine import dispose_engines, init_db
        from core.jobs import submit

        settings = get_settings()
        init_db(settings)
        submit("bench", {}, settings=settings)
        dispose_engines()

        naive_db = Path(tmp) / "naive.db"
        conn = sqlite3.connect(naive_db)
        conn.executescript("""
            CREATE TABLE jobs (id INTEGER PRIMARY KEY, progress_done INTEGER NOT NULL);
            CREATE TABLE job_events (id INTEGER PRIMARY KEY, job_id INTEGER, at TEXT,
                                     level TEXT, message TEXT);
            INSERT INTO jobs (id, progress_done) VALUES (1, 0);""")
        conn.commit()
        conn.close()

        rows = []
        for name, target, arg, db in (("naive sqlite3", _naive_worker, str(naive_db), naive_db),
                                      ("SynthLab", _synthlab_worker, str(home),
                                       home / "synthlab.db")):
            ok, locked, seconds = _run(target, arg, args.procs, args.n)
            check = sqlite3.connect(db)
            final = check.execute("SELECT progress_done FROM jobs WHERE id = 1").fetchone()[0]
            check.close()
            # Only increments that survived count: a lost update is not a good write.
            rows.append((name, ok, locked, ok - final, seconds, final / seconds))

    print(f"{args.procs} processes x {args.n} read-modify-write transactions")
    print(f"{'':<14} {'ok':>6} {'locked':>7} {'lost':>5} {'seconds':>8} {'kept/s':>8}")
    for name, ok, locked, lost, seconds, rate in rows:
        print(f"{name:<14} {ok:>6} {locked:>7} {lost:>5} {seconds:>8.2f} {rate:>8.1f}")
    print(f"ratio of kept increments per second (SynthLab / naive): {rows[1][5] / rows[0][5]:.2f}x; "
          f"'database is locked' reaching the caller: {rows[0][2]} naive, {rows[1][2]} SynthLab")


if __name__ == "__main__":
    main()
