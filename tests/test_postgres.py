"""The same code on PostgreSQL: only ``SYNTHLAB_DB_URL`` changes.

A throw-away PostgreSQL cluster (Debian's ``postgresql`` package) is started on a free
127.0.0.1 port in a temporary folder and stopped by its own PID. Without the server
binaries the tests skip locally and fail under CI (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.browser import free_port
from tests.imagemaker import make_imagefolder

ROOT = Path(__file__).resolve().parent.parent


def _pg_bin(name: str) -> str | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


def _as_postgres(command: list[str]) -> list[str]:
    # The server refuses to run as root; tests run as root in CI.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="module")
def postgres_server():
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing: .ci/run should have installed them")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    # Not under pytest's tmp folder: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="synthlab-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        _as_postgres([postgres, "-D", str(data), "-p", str(port), "-k", str(base),
                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import psycopg

    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.3)
    yield port
    pid_file = data / "postmaster.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else server.pid
    os.kill(pid, signal.SIGINT)  # fast shutdown
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def pg_settings(postgres_server, tmp_path, monkeypatch, request):
    """A fresh database on the server, and settings whose DB URL points at it."""
    import psycopg

    from core.config import get_settings
    from core.db.engine import dispose_engines

    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{postgres_server}/postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("SYNTHLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SYNTHLAB_DB_URL",
                       f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server}/{name}")
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    dispose_engines()
    yield get_settings()
    dispose_engines()


def _cli(*args: str) -> dict | list:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_migrations_import_gallery_train_and_check_on_postgres(pg_settings, tmp_path):
    from core import gallery
    from core.db.engine import current_revision, init_db

    init_db(pg_settings)
    assert current_revision(pg_settings) == "0012"
    folder = make_imagefolder(tmp_path / "photos", ["apple", "banana"], 12, size=(40, 32))
    (folder / "apple" / "broken.jpg").write_bytes(b"not an image")
    report = _cli("ingest", str(folder), "--dataset", "photos")
    assert report["added"] == 24 and len(report["rejected"]) == 1
    again = _cli("ingest", str(folder), "--dataset", "photos")
    assert again["added"] == 0 and again["duplicates"] == 24

    assert gallery.count(gallery.GalleryFilter(classes=["banana"])) == 12
    page = gallery.page(gallery.GalleryFilter(), sort="oldest", limit=5, offset=5)
    assert len(page.rows) == 5 and page.total == 24
    from core.db.engine import session_scope
    from core.preprocess.stats import ImageFilter, image_sizes

    with session_scope(pg_settings) as session:  # read through the driver's own cursor
        sizes = image_sizes(session, ImageFilter(source="real", class_name="banana"))
    assert sizes.tolist() == [[40.0, 32.0]] * 12

    run = _cli("train", "--train", "real", "--epochs", "2", "--image-size", "32", "--seed", "3")
    assert "accuracy" in json.dumps(run)
    runs = _cli("runs")
    assert len(runs) == 1
    check = _cli("check", "--min-age", "0")
    assert check["ok"] and not check["rows_missing_file"] and not check["orphan_files"]


def test_job_queue_claims_each_job_once_on_postgres(pg_settings):
    import threading

    from core import jobs
    from core.db.engine import init_db

    init_db(pg_settings)
    ids = [jobs.submit("noop", {"i": i}, created_by="ann") for i in range(12)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(worker: str) -> None:
        while (job_id := jobs.claim_next(worker, ["noop"], pg_settings)) is not None:
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == ids  # every job once, none twice (FOR UPDATE SKIP LOCKED)
    assert jobs.request_cancel(ids[0], by="ann")
    assert {j.status for j in jobs.list_jobs(kind="noop", settings=pg_settings)} == {"running"}


def test_gallery_undo_of_a_huge_bulk_change_on_postgres(pg_settings, tmp_path):
    """Undo of "Change all filtered images" may carry 100,000 ids: more than the 65,535
    bound parameters PostgreSQL takes in one statement (the owners check once sent them all)."""
    from core import gallery
    from core.db.engine import init_db
    from core.ingest import import_dataset
    from core.users.identity import unverified

    init_db(pg_settings)
    import_dataset(make_imagefolder(tmp_path / "few", ["apple"], 2, size=(24, 24)), pg_settings)
    before = gallery.curation_state(flt=gallery.GalleryFilter())
    gallery.update_filtered(gallery.GalleryFilter(), class_name="pear", actor="gil")
    gone = {10_000_000 + i: ("apple", False) for i in range(66_000)}  # deleted since
    assert gallery.revert({**before, **gone}, actor=unverified("gil")) == 2
    assert gallery.curation_state(flt=gallery.GalleryFilter()) == before


def test_gallery_counts_search_and_paging_match_a_python_filter_on_postgres(pg_settings):
    """The count table's statement-level triggers, the pg_trgm prompt index and keyset /
    reversed-offset paging give what a Python filter over all rows gives."""
    from sqlalchemy import text

    from core.db.engine import init_db, session_scope
    from core.gallery import GalleryFilter
    from tests import gallery_cases

    init_db(pg_settings)
    gallery_cases.populate(pg_settings, rows=200)
    with session_scope(pg_settings) as session:
        assert session.scalar(text("SELECT count(*) FROM pg_indexes "
                                   "WHERE indexname = 'ix_images_prompt_trgm'")) == 1
    gallery_cases.check_counts_table(pg_settings)
    gallery_cases.mutate(pg_settings)
    gallery_cases.check_counts_table(pg_settings)
    assert gallery_cases.check_every_combination(pg_settings, combinations=25) > 25
    for sort in ("newest", "class"):
        gallery_cases.check_paging(pg_settings, GalleryFilter(prompt_contains="green"), sort,
                                   limit=8)


def test_crossed_imports_relabels_and_deletes_do_not_deadlock_on_the_count_rows_on_postgres(
        pg_settings):
    """Two writers at once over the same (class, source, dataset, split) keys in opposite
    orders: an import batch goes in row by row (psycopg's executemany runs one INSERT per
    row, so the count triggers fire per row), a relabel or delete moves rows between keys.
    Each transaction must not lock shared count rows as it goes (it would hold the one the
    other wants next: "deadlock detected"), and the counts must stay exact."""
    from sqlalchemy import delete, insert, select, text, update

    from core.db.engine import init_db, session_scope
    from core.db.models import Image
    from tests import gallery_cases

    init_db(pg_settings)
    gallery_cases.populate(pg_settings, rows=40)
    with session_scope(pg_settings, write=True) as session:
        # Two rows of each class in the key the imports write (dataset 1, real, train).
        session.execute(insert(Image), [gallery_cases.import_row(900 + 10 * i + c, c)
                                        for i in (1, 2) for c in range(1, 6)])

    def add(number: int, class_id: int):  # noqa: ANN202
        return lambda session: session.execute(insert(Image), [gallery_cases.import_row(
            number, class_id)])

    def move(class_from: int, class_to: int):  # noqa: ANN202
        def step(session) -> None:  # noqa: ANN001
            victim = session.scalar(select(Image.id).where(
                Image.class_id == class_from, Image.dataset_id == 1, Image.split == "train",
                Image.excluded.is_(False), Image.source == "real").limit(1))
            session.execute(update(Image).where(Image.id == victim).values(class_id=class_to))
        return step

    def drop(class_id: int):  # noqa: ANN202
        def step(session) -> None:  # noqa: ANN001
            session.execute(delete(Image).where(Image.id == session.scalar(select(Image.id).where(
                Image.class_id == class_id, Image.dataset_id == 1, Image.split == "train",
                Image.excluded.is_(False), Image.source == "real").limit(1))))
        return step

    apple, banana = 5, 4  # class ids (populate creates them in reverse name order)
    crossings = [
        ([add(2001, apple), add(2002, banana)], [add(2003, banana), add(2004, apple)]),
        ([add(2005, apple), add(2006, banana)], [drop(banana), move(3, apple)]),
        ([move(apple, banana), add(2007, 3)], [move(banana, apple), add(2008, 3)]),
    ]
    for first, second in crossings:
        errors = gallery_cases.crossed_transactions(pg_settings, first, second)
        assert not errors, [str(e).splitlines()[0] for e in errors]
    gallery_cases.check_counts_table(pg_settings)
    with session_scope(pg_settings) as session:  # each commit folded its own deltas
        assert session.scalar(text("SELECT count(*) FROM image_count_deltas")) == 0


def test_concurrent_writers_keep_the_counts_exact_on_postgres(pg_settings):
    from core.db.engine import init_db
    from tests import gallery_cases

    init_db(pg_settings)
    gallery_cases.populate(pg_settings, rows=40)
    kept = gallery_cases.concurrent_writers(pg_settings, writers=3, rounds=5)
    gallery_cases.check_counts_table(pg_settings)
    assert len(gallery_cases.all_rows(pg_settings)) == 40 + kept


def test_a_deadlock_or_serialization_failure_is_retried_whatever_the_server_language():
    """``run_write`` retries PostgreSQL's 40P01 and 40001 by SQLSTATE: a server with German
    messages says "Verklemmung entdeckt", not "deadlock detected"."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from core.db.engine import is_transient

    def wrapped(error: Exception) -> OperationalError:
        return OperationalError("UPDATE image_counts ...", {}, error)

    assert is_transient(wrapped(psycopg.errors.DeadlockDetected("Verklemmung entdeckt")))
    assert is_transient(wrapped(psycopg.errors.SerializationFailure("konnte nicht serialisieren")))
    assert not is_transient(wrapped(psycopg.errors.QueryCanceled("Anfrage abgebrochen")))
    assert not is_transient(wrapped(psycopg.errors.UndefinedTable("Relation fehlt")))
