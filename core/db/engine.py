"""Engines, sessions and start-up migrations.

SQLite is the embedded default and must take several writers at once (browser sessions
plus a background worker): it runs in WAL mode with a busy timeout, and write sessions
open with ``BEGIN IMMEDIATE`` so a writer waits for the lock at the start of its
transaction instead of failing half-way with "database is locked". Read sessions use a
plain deferred ``BEGIN`` and never block on writers (WAL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 60_000
_lock = threading.Lock()
_engines: dict[tuple[str, bool], Engine] = {}
_migrated: set[str] = set()


def display_url(url: str) -> str:
    """A database URL fit to show: the password (in the user-info part or as a
    ``password=`` query option, as libpq allows) is replaced with ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not a URL SQLAlchemy reads: show only its scheme, it may hold anything.
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    hidden = {key: "***" for key in parsed.query if key.lower() in ("password", "passwd")}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def _make_engine(settings: Settings, write: bool) -> Engine:
    url = settings.database_url
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, future=True)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        future=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Take transaction control from pysqlite so that we decide how BEGIN is issued.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def get_engine(settings: Settings | None = None, *, write: bool = True) -> Engine:
    settings = settings or get_settings()
    key = (settings.database_url, write)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _make_engine(settings, write)
            _engines[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, and after a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()


@contextlib.contextmanager
def session_scope(settings: Settings | None = None, *, write: bool = False) -> Iterator[Session]:
    """A session that commits on success (write sessions) and always closes.

    Objects stay usable after the block (``expire_on_commit=False``), which is what pages
    want when they render rows they just loaded.
    """
    settings = settings or get_settings()
    init_db(settings)
    factory = sessionmaker(bind=get_engine(settings, write=write), expire_on_commit=False)
    session = factory()
    try:
        yield session
        if write:
            session.commit()
        # A read session just closes: rollback() would expire the loaded objects.
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def run_write(fn: Callable[[Session], T], settings: Settings | None = None, *, attempts: int = 5) -> T:
    """Run ``fn`` in a write transaction, retrying if the database stays locked or the
    server aborted it to break a deadlock or a serialization conflict.

    ``fn`` must be safe to run again: it is retried from scratch on such an error, after a
    wait that doubles each time and differs between processes and threads (so two writers
    that collided do not collide again in step).
    """
    delay = 0.2 * (0.5 + _spread())
    for attempt in range(attempts):
        try:
            with session_scope(settings, write=True) as session:
                return fn(session)
        except OperationalError as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _spread() -> float:
    # A fixed fraction in [0, 1) per process and thread: jitter without a random draw.
    return ((os.getpid() * 2654435761 + threading.get_ident()) % 1000) / 1000


# Errors that a retry of the whole transaction cures: SQLite's lock wait running out, and
# PostgreSQL's deadlock (40P01) and serialization (40001) failures. PostgreSQL's are told by
# SQLSTATE, which does not depend on the server's message language; the texts are a fallback.
_TRANSIENT_SQLSTATES = ("40P01", "40001")
_TRANSIENT_MARKERS = ("database is locked", "database table is locked", "deadlock detected",
                      "could not serialize access")


def is_transient(exc: OperationalError) -> bool:
    """Whether retrying the whole transaction can cure ``exc``."""
    if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def _migrations_dir() -> Path:
    return Path(__file__).resolve().parent / "migrations"


def alembic_config(settings: Settings):  # noqa: ANN201 - alembic type
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


@contextlib.contextmanager
def _migration_lock(settings: Settings) -> Iterator[None]:
    """Only one process migrates at a time (several may start at once on a shared host)."""
    if settings.is_sqlite:
        settings.home_path.mkdir(parents=True, exist_ok=True)
        with open(settings.home_path / ".migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        engine = get_engine(settings)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(727271)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(727271)"))
                conn.commit()


class DataFolderError(OSError):
    """The data folder cannot be created or written; the message says what to do."""


def _prepare_data_folder(settings: Settings) -> None:
    # Fail at start-up with one clear sentence rather than later, half-way through a write.
    try:
        settings.ensure_dirs()
        with tempfile.NamedTemporaryFile(dir=settings.tmp_dir, prefix=".probe-"):
            pass
    except OSError as exc:
        raise DataFolderError(
            exc.errno, f"cannot write to the data folder {settings.home_path}: "
            f"{exc.strerror or exc}. Point SYNTHLAB_HOME at a writable folder with free "
            "space.") from exc


def init_db(settings: Settings | None = None) -> None:
    """Create the data folders and bring the schema to the newest revision (once per process)."""
    settings = settings or get_settings()
    url = settings.database_url
    if url in _migrated:
        return
    with _lock:
        if url in _migrated:
            return
    _prepare_data_folder(settings)
    from alembic import command

    with _migration_lock(settings):
        engine = get_engine(settings, write=True)
        config = alembic_config(settings)
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    with _lock:
        _migrated.add(url)


def current_revision(settings: Settings | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    settings = settings or get_settings()
    with get_engine(settings, write=False).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
