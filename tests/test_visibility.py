"""Who may see what, and what a user may not do is shown disabled (issue 13, point 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.db.engine import display_url
from core.preprocess import DEFAULT_NAMES, default_pipeline
from core.preprocess.presets import delete_preset, get_preset, save_preset
from core.users import accounts, audit
from core.users.identity import AUTH_PASSWORD, Identity
from core.users.permissions import PermissionDenied

PAGES = Path(__file__).resolve().parent.parent / "pages"
TIMEOUT = 60


@pytest.fixture()
def server(settings, monkeypatch):
    """Password mode with an admin (root) and a user (bob)."""
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("root", "roots-password", is_admin=True, settings=settings)
    accounts.add_user("bob", "bobs-password", settings=settings)
    return settings


def _signed_in(script: Path | object, name: str) -> AppTest:
    """``script`` (a page file or a function) run by ``name``, signed in through the form."""
    at = (AppTest.from_file(str(script), default_timeout=TIMEOUT) if isinstance(script, Path)
          else AppTest.from_function(script, default_timeout=TIMEOUT)).run()
    at.text_input(key="_sign_in_name").input(name)
    at.text_input(key="_sign_in_password").input(f"{name}s-password")
    at = at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def _texts(elements) -> str:  # noqa: ANN001
    return " | ".join(str(e.value) for e in elements)


def test_database_urls_are_shown_without_their_password() -> None:
    shown = display_url("postgresql+psycopg://lab:s3cr%40t:x@db.lab:5432/synthlab"
                        "?sslmode=require&password=other")
    assert "s3cr" not in shown and "other" not in shown
    assert shown.startswith("postgresql+psycopg://lab:***@db.lab:5432/synthlab?")
    assert display_url("sqlite:////srv/synthlab/synthlab.db") == "sqlite:////srv/synthlab/synthlab.db"
    assert display_url("not a url with a p4ss") == "***"


def test_audit_log_worker_log_and_settings_are_for_admins(server):
    jobs.request_cancel(jobs.submit("train", {}, created_by="bob", settings=server), by="bob",
                        settings=server)
    at = _signed_in(PAGES / "admin.py", "bob")
    assert [t.value for t in at.title] == ["Admin"]
    assert not at.dataframe and not at.json  # no audit table, no settings
    assert not at.code  # no worker log
    assert _texts(at.info).count("Only admins can see this") == 2
    restart = [b for b in at.button if b.label == "Restart worker"]
    assert restart and restart[0].disabled and "Only admins" in restart[0].help

    at = _signed_in(PAGES / "admin.py", "root")
    assert list(at.dataframe[-1].value["action"])[0] == "cancel"  # the audit log, newest first
    assert at.code  # the worker log
    assert at.json[0].value and "db_url" in at.json[0].value


def test_builtin_presets_are_for_admins_and_preset_changes_are_audited(server):
    bob = Identity("bob", auth_mode=AUTH_PASSWORD, verified=True)
    root = Identity("root", is_admin=True, auth_mode=AUTH_PASSWORD, verified=True)
    for name in DEFAULT_NAMES:
        with pytest.raises(PermissionDenied, match="only an admin"):
            save_preset(name, default_pipeline("synthetic"), bob, settings=server)
    save_preset("bobs", default_pipeline("real"), bob, settings=server)
    save_preset("real", default_pipeline("synthetic"), root, settings=server)
    with pytest.raises(PermissionDenied):
        delete_preset("real", server, actor=bob)
    assert get_preset("real", server).updated_by == "root"
    assert delete_preset("bobs", server, actor=bob)
    entries = audit.entries(settings=server)
    assert [(e.actor, e.action) for e in entries if e.action != "refused"][:3] == [
        ("bob", "preset_delete"), ("root", "preset_save"), ("bob", "preset_save")]
    refusals = [e for e in entries if e.action == "refused"]
    assert len(refusals) == len(DEFAULT_NAMES) + 1 and {e.actor for e in refusals} == {"bob"}

    # On the page: bob is told up front, and offered only what he may delete.
    save_preset("bobs", default_pipeline("real"), bob, settings=server)
    at = _signed_in(PAGES / "preprocess.py", "bob")
    name_field = next(t for t in at.text_input if t.label == "Preset name")
    assert "Only admins can save over the built-in presets" in name_field.help
    delete_menu = next(s for s in at.selectbox if s.label == "Preset")
    assert list(delete_menu.options) == ["bobs"]  # not root's "real"


def _panel() -> None:
    from webui import boot
    from webui.jobs import render_job_list

    boot()
    render_job_list(None, key="p", refresh_seconds=60)


def test_job_panel_disables_others_cancel_and_hides_server_paths(server):
    roots = jobs.submit("train", {}, title="root's run", created_by="root", settings=server)
    failed = jobs.submit("train", {}, title="broken", created_by="root", settings=server)
    jobs.finish(failed, jobs.FAILED, error="OSError: cannot read '/srv/lab/synthlab/cache/x.npy'",
                settings=server)
    at = _signed_in(_panel, "bob")
    cancel = next(b for b in at.button if b.key == f"p-cancel-{roots}")
    assert cancel.disabled and "Only root or an admin" in cancel.help
    assert "'…/x.npy'" in _texts(at.error) and "/srv/lab" not in _texts(at.error)
    at = _signed_in(_panel, "root")
    assert not next(b for b in at.button if b.key == f"p-cancel-{roots}").disabled
    assert "/srv/lab/synthlab/cache/x.npy" in _texts(at.error)


def test_gallery_disables_changes_to_others_images(server, tmp_path):
    from core import gallery
    from core.ingest import ImportOptions, import_dataset
    from tests.imagemaker import make_imagefolder

    import_dataset(make_imagefolder(tmp_path / "r", ["apple"], 1, size=(24, 24)), server,
                   ImportOptions(dataset="roots", added_by="root"))
    image_id = gallery.page(gallery.GalleryFilter(), settings=server).rows[0].id
    at = _signed_in(PAGES / "gallery.py", "bob")
    at.session_state["g_selected"] = image_id
    at = at.run()
    assert not at.exception
    for label in ("Relabel", "Exclude", "Delete"):
        button = next(b for b in at.button if b.label == label)
        assert button.disabled and "Only root (who added this image)" in button.help, label


def test_a_user_added_model_is_removed_only_by_its_adder_or_an_admin_and_audited(server):
    """Anyone may add a model to the shared menu; taking it off is the adder's or an admin's
    call, its files stay, and the audit log says who did it."""
    from core.generation.registry import add_custom_model, custom_sources, remove_custom_model

    bob = Identity("bob", auth_mode=AUTH_PASSWORD, verified=True)
    root = Identity("root", is_admin=True, auth_mode=AUTH_PASSWORD, verified=True)
    add_custom_model("lab/roots-model", added_by="root", settings=server)
    add_custom_model("lab/bobs-model", added_by="bob", settings=server)
    with pytest.raises(PermissionDenied, match="may not delete the model lab/roots-model added by root; "):
        remove_custom_model("lab/roots-model", by=bob, settings=server)
    assert remove_custom_model("lab/bobs-model", by=bob, settings=server)
    assert not remove_custom_model("lab/bobs-model", by=bob, settings=server)  # already gone
    assert remove_custom_model("lab/roots-model", by=root, settings=server)
    assert custom_sources(server) == []
    entries = [(e.actor, e.action, e.target_id) for e in audit.entries(settings=server)
               if e.action in ("model_remove", "refused")]
    assert entries[:2] == [("root", "model_remove", "lab/roots-model"),
                           ("bob", "model_remove", "lab/bobs-model")]
    assert entries[2][:2] == ("bob", "refused")
