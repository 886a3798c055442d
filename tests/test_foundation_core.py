"""The foundation's own parts: settings, migrations, image decoding, store, jobs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.imagemaker import fruit_image


def test_settings_from_env(monkeypatch, tmp_path):
    from core.config import Settings

    settings = Settings.from_env({"SYNTHLAB_HOME": str(tmp_path), "SYNTHLAB_IMAGE_SIZE": "32",
                                  "SYNTHLAB_AUTOSTART_WORKER": "false"})
    assert settings.home_path == tmp_path.resolve()
    assert settings.image_size == 32 and settings.autostart_worker is False
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'synthlab.db'}"
    masked = Settings(db_url="postgresql+psycopg://me:secret@db/x").to_public_dict()["db_url"]
    assert "secret" not in masked


def test_migrations_reach_head_and_sqlite_is_wal(settings):
    from sqlalchemy import text

    from core.db.engine import current_revision, get_engine

    assert current_revision(settings) is not None
    with get_engine(settings).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert {"images", "classes", "datasets", "jobs", "job_events", "users"} <= tables


def test_migrations_build_exactly_the_schema_the_models_describe(settings):
    """A model change without its migration (or the reverse) would only show up on a
    user's upgraded database; alembic's comparison catches it here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import core.db.all_models  # noqa: F401 - every table into Base.metadata
    from core.db.engine import get_engine
    from core.db.models import Base

    def modelled(name, kind, _parent):  # noqa: ANN001
        # The FTS5 prompt index (a virtual table and its shadow tables, migration 0011) is
        # SQLite-only and has no model; everything else must match.
        return not (kind == "table" and name.startswith("images_prompt_fts"))

    with get_engine(settings).connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": modelled})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_decode_converts_modes_and_rejects_bad_input():
    from core.imageio import ImageRejected, decode_image

    base = fruit_image("apple", 1)
    for mode in ("L", "P", "CMYK", "RGBA", "I;16"):
        buffer = io.BytesIO()
        converted = base.convert("L").convert(mode) if mode == "I;16" else base.convert(mode)
        converted.save(buffer, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
        decoded = decode_image(buffer.getvalue())
        assert decoded.image.mode == "RGB" and decoded.image.size == base.size
    with pytest.raises(ImageRejected, match="not an image"):
        decode_image(b"hello, not an image")
    good = io.BytesIO()
    base.save(good, format="JPEG")
    with pytest.raises(ImageRejected, match="truncated|corrupt"):
        decode_image(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(ImageRejected, match="too large"):
        decode_image(good.getvalue(), max_pixels=100)


def test_exif_rotation_is_applied():
    from core.imageio import decode_image

    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.image.size == (20, 40) and decoded.was_converted


def test_store_is_content_addressed_and_atomic(settings):
    from core.imageio import decode_image
    from core.store import ImageStore

    store = ImageStore(settings)
    buffer = io.BytesIO()
    fruit_image("lime", 3).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    first = store.put(decoded, buffer.getvalue())
    second = store.put(decoded, buffer.getvalue())
    assert first.created and not second.created and first.relpath == second.relpath
    assert np.array_equal(np.asarray(store.open_rgb(first.relpath)), np.asarray(decoded.image))
    assert store.thumbnail_path(first.relpath).is_file()
    assert not list(settings.tmp_dir.iterdir())  # no temporary file left behind
    with pytest.raises(ValueError):
        store.abspath("../../etc/passwd")


def test_job_lifecycle_runs_handler_and_cancels(settings):
    from core import jobs
    from core.worker import run_worker

    seen = []

    @jobs.register_handler("test-count")
    def count(ctx):
        for i in range(ctx.params["n"]):
            ctx.progress(i + 1, ctx.params["n"], force=True)
            seen.append(i)
        return {"counted": ctx.params["n"]}

    done_id = jobs.submit("test-count", {"n": 3}, created_by="ann", total=3)
    cancelled_id = jobs.submit("test-count", {"n": 3}, created_by="bob")
    assert jobs.request_cancel(cancelled_id, by="bob")
    assert run_worker(settings, once=True) == 0
    done, cancelled = jobs.get_job(done_id), jobs.get_job(cancelled_id)
    assert done.status == "done" and done.result == {"counted": 3} and done.progress_done == 3
    assert cancelled.status == "cancelled" and seen == [0, 1, 2]
    assert any("queued by ann" in e.message for e in jobs.job_events(done_id))


def test_stale_running_job_is_resumed(settings, monkeypatch):
    import datetime as dt

    from core import jobs
    from core.db.engine import run_write
    from core.db.models import Job
    from core.worker import run_worker

    @jobs.register_handler("test-resume")
    def resume(ctx):
        return {"attempt": "resumed"}

    job_id = jobs.submit("test-resume", {})

    def crash(session):  # a worker that claimed the job and died long ago
        job = session.get(Job, job_id)
        job.status, job.worker_id, job.attempts = "running", "otherhost:1", 1
        job.heartbeat_at = dt.datetime(2000, 1, 1)
    run_write(crash, settings)
    run_worker(settings, once=True)
    job = jobs.get_job(job_id)
    assert job.status == "done" and job.attempts == 2
    assert any("resumed" in e.message for e in jobs.job_events(job_id))
