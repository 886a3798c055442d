"""Every state-changing core action re-checks who is acting at that moment (issue 13, point 1).

A browser tab keeps the identity it signed in with, and a click inside a live job panel (a
fragment) reruns only the fragment, not the sign-in check in ``webui.boot``. So the guard
lives in core: an identity handed to a core function is re-read from the accounts before
the change, and a refusal is written to the audit log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import gallery, jobs
from core.preprocess import default_pipeline
from core.preprocess.presets import delete_preset, get_preset, save_preset
from core.users import accounts, audit
from core.users.identity import AUTH_PASSWORD, Identity
from core.users.permissions import PermissionDenied
from tests.imagemaker import make_imagefolder


def _signed_in(name: str, admin: bool) -> Identity:
    """What a tab holds after signing in: the role as it was then."""
    return Identity(name, is_admin=admin, auth_mode=AUTH_PASSWORD, verified=True)


@pytest.fixture()
def server(settings, tmp_path, monkeypatch):
    """A password-mode server: two admins (root, boss), a user (bob) with images, a preset
    and a queued job."""
    from core.ingest import ImportOptions, import_dataset

    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("root", "roots-password", is_admin=True, settings=settings)
    accounts.add_user("boss", "bosss-password", is_admin=True, settings=settings)
    accounts.add_user("bob", "bobs-password", settings=settings)
    import_dataset(make_imagefolder(tmp_path / "bob", ["apple"], 2, size=(24, 24)), settings,
                   ImportOptions(dataset="bobs", added_by="bob"))
    save_preset("bobs-preset", default_pipeline("real"), "bob", settings=settings)
    return settings


def _refusals(settings) -> list[tuple[str, str | None]]:  # noqa: ANN001
    return [(e.actor, e.target_kind) for e in audit.entries(action="refused", settings=settings)]


def test_a_demoted_admin_is_refused_by_every_core_action_and_audited(server):
    settings = server
    boss = _signed_in("boss", admin=True)  # boss's open tab, signed in as an admin
    job = jobs.submit("train", {}, created_by="bob", settings=settings)
    ids = [r.id for r in gallery.page(gallery.GalleryFilter(), limit=10, settings=settings).rows]
    assert len(ids) == 2
    accounts.set_admin("boss", False, actor="root", settings=settings)

    refused = [
        lambda: jobs.request_cancel(job, by=boss, settings=settings),
        lambda: gallery.relabel(ids, "pear", actor=boss, settings=settings),
        lambda: gallery.set_excluded(ids, True, actor=boss, settings=settings),
        lambda: gallery.set_excluded(ids, False, actor=boss, settings=settings),
        lambda: gallery.delete_images(ids, actor=boss, settings=settings),
        lambda: gallery.update_filtered(gallery.GalleryFilter(), excluded=True, actor=boss,
                                        settings=settings),
        lambda: save_preset("bobs-preset", default_pipeline("synthetic"), boss, settings=settings),
        lambda: delete_preset("bobs-preset", settings, actor=boss),
        lambda: save_preset("real", default_pipeline("synthetic"), boss, settings=settings),
        lambda: accounts.add_user("mallory", "mallorys-password", is_admin=True, actor=boss,
                                  settings=settings),
        lambda: accounts.set_admin("boss", True, actor=boss, settings=settings),
        lambda: accounts.set_password("bob", "new-password", actor=boss, settings=settings),
        lambda: accounts.remove_user("bob", actor=boss, settings=settings),
    ]
    for action in refused:
        with pytest.raises(PermissionDenied):
            action()
    assert jobs.get_job(job, settings).status == jobs.QUEUED
    assert gallery.count(gallery.GalleryFilter(include_excluded=True), settings) == 2
    assert gallery.count(gallery.GalleryFilter(), settings) == 2  # nothing excluded
    assert get_preset("bobs-preset", settings).updated_by == "bob"
    assert get_preset("real", settings) is None
    assert accounts.get_user("mallory", settings) is None
    assert not accounts.get_user("boss", settings).is_admin
    assert _refusals(settings) == [
        ("boss", kind) for kind in reversed(
            ["cancel", "relabel", "exclude", "exclude", "delete", "exclude", "delete", "delete",
             "override_builtin_preset", "manage_users", "manage_users", "manage_users",
             "manage_users"])]
    # Queueing work stays open to every signed-in user, demoted or not.
    assert jobs.submit("train", {}, created_by=boss, settings=settings)
    # The role is read both ways: re-promoted, the same stale tab may cancel again.
    accounts.set_admin("boss", True, actor="root", settings=settings)
    assert jobs.request_cancel(job, by=_signed_in("boss", admin=False), settings=settings)


def test_a_removed_user_can_neither_queue_nor_change_their_own_things(server):
    from core.ingest.jobs import submit_import

    settings = server
    bob = _signed_in("bob", admin=False)
    own_job = jobs.submit("train", {}, created_by=bob, settings=settings)
    accounts.remove_user("bob", actor="root", settings=settings)
    with pytest.raises(PermissionDenied, match="no longer has an account"):
        jobs.submit("train", {}, created_by=bob, settings=settings)
    with pytest.raises(PermissionDenied):
        submit_import("some/hub-id", user=bob, settings=settings)
    with pytest.raises(PermissionDenied):
        jobs.request_cancel(own_job, by=bob, settings=settings)
    with pytest.raises(PermissionDenied):
        delete_preset("bobs-preset", settings, actor=bob)
    assert jobs.get_job(own_job, settings).status == jobs.QUEUED
    assert len(jobs.list_jobs(settings=settings)) == 1
    assert [actor for actor, _ in _refusals(settings)] == ["bob"] * 4


def _home_job_panel() -> None:
    """The live job panel as Home draws it (a fragment), after the page's sign-in check."""
    from webui import boot
    from webui.jobs import render_job_list

    boot()
    render_job_list(None, key="home-jobs", refresh_seconds=60)


def test_a_cancel_click_in_an_open_panel_after_demotion_is_refused(server):
    settings = server
    job = jobs.submit("train", {}, title="bob's run", created_by="bob", settings=settings)
    at = AppTest.from_function(_home_job_panel, default_timeout=60).run()
    at.text_input(key="_sign_in_name").input("boss")
    at.text_input(key="_sign_in_password").input("bosss-password")
    at = at.button[0].click().run()
    assert not at.exception
    cancel = [b for b in at.button if b.key == f"home-jobs-cancel-{job}"]
    assert cancel, "an admin's panel offers Cancel on bob's job"
    # Another admin demotes boss while boss's panel is open; then boss clicks Cancel. The
    # button's callback runs before anything of the page, as in a fragment rerun.
    accounts.set_admin("boss", False, actor="root", settings=settings)
    at = cancel[0].click().run()
    assert not at.exception
    assert jobs.get_job(job, settings).status == jobs.QUEUED
    assert any("Not cancelled" in str(e.value) for e in at.error)
    assert _refusals(settings) == [("boss", "cancel")]
    # and no Cancel button is offered to boss any more
    assert not [b for b in at.button if b.label == "Cancel" and not b.disabled]


def test_cli_names_and_mode_none_keep_working(settings):
    """A plain name (CLI) and auth mode ``none`` are not looked up: nothing changes there."""
    from core.users.identity import unverified

    job = jobs.submit("train", {}, created_by=unverified("alice"), settings=settings)
    assert jobs.request_cancel(job, by=unverified("carol"), settings=settings)
    save_preset("real", default_pipeline("synthetic"), unverified("carol"), settings=settings)
    assert delete_preset("real", settings, actor="cli")
    assert [e.action for e in audit.entries(settings=settings)] == [
        "preset_delete", "preset_save", "cancel"]


def test_guard_module_has_no_streamlit_import() -> None:
    source = (Path(__file__).resolve().parent.parent / "core" / "users" / "permissions.py").read_text()
    assert "streamlit" not in source


def test_importing_a_server_folder_is_checked_in_core(server, tmp_path):
    """The Import page's admin check is a convenience; ``submit_import`` is the guard."""
    from core.ingest.jobs import submit_import

    settings = server
    folder = make_imagefolder(tmp_path / "on-the-server", ["plum"], 1, size=(24, 24))
    bob = _signed_in("bob", admin=False)
    with pytest.raises(PermissionDenied, match="only an admin"):
        submit_import(str(folder), user=bob, settings=settings)
    assert any(actor == "bob" for actor, _ in _refusals(settings))
    boss = _signed_in("boss", admin=True)
    accounts.set_admin("boss", False, actor="root", settings=settings)
    with pytest.raises(PermissionDenied):
        submit_import(str(folder), user=boss, settings=settings)  # demoted since signing in
    root = _signed_in("root", admin=True)
    assert submit_import(str(folder), user=root, settings=settings) > 0
    assert submit_import(str(folder), user="cli", settings=settings) > 0  # the server's shell
