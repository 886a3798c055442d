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
    assert current_revision(pg_settings) == "0011"
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
