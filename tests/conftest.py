"""Shared fixtures: every test gets its own data folder and SQLite database."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never reach a network or a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch (OpenMP) thread in the test processes and in every server, worker and CLI they
# start (they inherit this environment). The test models are tiny: a second thread only
# spins against the other xdist worker on a 2-core host. Measured: a worker making 16
# tiny-model images used 13.6 s of CPU with the default two threads and 6.8 s with one,
# and took half the time. Set OMP_NUM_THREADS yourself to run the suite with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001, ANN201 - xdist's hook
    """``--dist loadfile`` (pytest.ini) with the longest files first: tests/xdist_order.py."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from tests.xdist_order import LongestFirstFileScheduling

    return LongestFirstFileScheduling(config, log)


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest.Config
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        from tests.xdist_order import DurationRecorder

        config.pluginmanager.register(DurationRecorder(ROOT / "test-output" / "durations.json"),
                                      "synthlab-duration-recorder")


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory) -> Path:
    """A SQLite database file brought to the newest schema revision by ``init_db``, once per
    test process. Running every migration again for each test's fresh data folder cost a
    few tenths of a second each, several hundred times a run; a copy of this file is the
    same database (the migrations still run from an empty file here)."""
    import sqlite3

    from core.config import Settings
    from core.db.engine import dispose_engines, init_db

    home = tmp_path_factory.mktemp("migrated-template") / "home"
    template = Settings(home=home)
    dispose_engines()
    init_db(template)
    dispose_engines()
    database = home / "synthlab.db"
    conn = sqlite3.connect(database)
    try:  # everything in the main file, nothing left in a -wal file beside it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return database


@pytest.fixture()
def settings(tmp_path, monkeypatch, migrated_database):
    """Settings pointing at a fresh data folder; the app and CLI see the same via env."""
    import shutil

    from core.config import get_settings
    from core.db.engine import dispose_engines, init_db

    home = tmp_path / "synthlab-home"
    monkeypatch.setenv("SYNTHLAB_HOME", str(home))
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    monkeypatch.delenv("SYNTHLAB_DB_URL", raising=False)
    dispose_engines()
    current = get_settings()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_database, current.home_path / "synthlab.db")
    init_db(current)  # finds the schema at head: only the data folders are made
    yield current
    dispose_engines()


@pytest.fixture()
def output_dir(request) -> Path:
    """A folder kept after the run (screenshots, reports): test-output/<test name>."""
    folder = ROOT / "test-output" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are all per-call overhead: a second thread only fights over a shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """AppTest runs its page script as ``__main__`` and leaves it there; a later test's
    spawned process pool would then re-run that (temporary) script. Put the real one back
    after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
