"""The Hugging Face field takes a Hub id only: a folder on the server is never imported
through it (issue 13, point 7); server folders go through the admin-only server-path import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.users import accounts
from tests.imagemaker import make_imagefolder

ROOT = Path(__file__).resolve().parent.parent


def _signed_in_import_page(name: str, password: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "import_data.py"), default_timeout=60).run()
    at.text_input(key="_sign_in_name").input(name)
    at.text_input(key="_sign_in_password").input(password)
    return at.button[0].click().run()


def test_non_admin_cannot_import_a_relative_server_folder_through_the_hub_field(
        settings, tmp_path, monkeypatch):
    from core.worker import run_worker

    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("bob", "bobs-password", settings=settings)
    # A relative folder shaped like a Hub id (owner/name), as the attacker typed it. The
    # worker runs from another folder than the dashboard: there the text names the folder.
    make_imagefolder(tmp_path / "secret" / "fruit", ["apple"], 2, size=(16, 16))
    (tmp_path / "dashboard").mkdir()
    monkeypatch.chdir(tmp_path / "dashboard")
    at = _signed_in_import_page("bob", "bobs-password")
    assert not at.exception
    at.radio(key="import_from").set_value("Hugging Face dataset").run()
    at.text_input(key="import_hub").set_value("secret/fruit")
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    monkeypatch.chdir(tmp_path)
    run_worker(settings, once=True)
    queued = jobs.list_jobs(kind="import", settings=settings)
    assert all(j.status == jobs.FAILED for j in queued), [(j.status, j.error) for j in queued]
    assert image_count(settings) == 0, "the Hub field imported a folder on the server"

    # Where the dashboard itself sees the folder, the page refuses before queueing.
    at.text_input(key="import_hub").set_value("secret/fruit")
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception and not at.success
    assert any("server" in e.value for e in at.error)
    assert len(jobs.list_jobs(kind="import", settings=settings)) == len(queued)


def image_count(settings) -> int:  # noqa: ANN001
    from sqlalchemy import func, select

    from core.db.engine import session_scope
    from core.db.models import Image

    with session_scope(settings) as session:
        return session.execute(select(func.count(Image.id))).scalar_one()


def test_core_hub_only_import_refuses_paths(settings, tmp_path, monkeypatch):
    from core.ingest import ImportOptions, SourceError, import_dataset
    from core.ingest.jobs import submit_import

    folder = make_imagefolder(tmp_path / "secret" / "fruit", ["apple"], 2, size=(16, 16))
    monkeypatch.chdir(tmp_path)
    for text in ("secret/fruit", str(folder), "../secret", "./secret/fruit"):
        with pytest.raises(SourceError):
            submit_import(text, hub_only=True, user="bob", settings=settings)
        with pytest.raises(SourceError):
            import_dataset(text, settings, ImportOptions(hub_only=True))
    assert jobs.list_jobs(kind="import", settings=settings) == []
    # A job queued with hub_only (e.g. before the folder appeared) is checked again when it
    # runs, so it fails instead of reading the folder.
    from core.worker import run_worker

    os.rename(tmp_path / "secret", tmp_path / "moved")
    job_id = submit_import("secret/fruit", hub_only=True, user="bob", settings=settings)
    os.rename(tmp_path / "moved", tmp_path / "secret")
    run_worker(settings, once=True)
    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.FAILED and "server" in (job.error or "")
