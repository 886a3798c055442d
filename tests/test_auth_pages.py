"""The sign-in gate and the admin page, through Streamlit's AppTest (auth modes)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import jobs
from core.users import accounts
from core.users.identity import Identity

TIMEOUT = 60
ADMIN_PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "admin.py")


def _admin_page() -> AppTest:
    return AppTest.from_file(ADMIN_PAGE, default_timeout=TIMEOUT)


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="_sign_in_name").input(name)
    at.text_input(key="_sign_in_password").input(password)
    return at.button[0].click().run()


def _texts(elements) -> str:  # noqa: ANN001
    return " | ".join(str(e.value) for e in elements)


def test_password_mode_refuses_wrong_password_and_lets_the_right_one_in(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("alice", "alices-password", settings=settings)
    at = _admin_page().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in to SynthLab"]
    assert not at.tabs  # nothing of the page behind the gate

    at = _sign_in(at, "alice", "wrong-password")
    assert "Wrong name or password" in _texts(at.error)  # a sentence, with its capital
    assert [t.value for t in at.title] == ["Sign in to SynthLab"]

    at = _sign_in(at, "alice", "alices-password")
    assert not at.exception
    assert [t.value for t in at.title] == ["Admin"]
    assert at.session_state["_synthlab_identity"].name == "alice"
    # Not an admin: no user management; the worker restart is shown disabled, with why.
    assert "Only admins can see and manage user accounts." in _texts(at.info)
    restart = [b for b in at.button if b.label == "Restart worker"]
    assert restart and all(b.disabled for b in restart)


def test_admin_manages_users_from_the_page(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("root", "roots-password", is_admin=True, settings=settings)
    at = _sign_in(_admin_page().run(), "root", "roots-password")
    assert [t.value for t in at.title] == ["Admin"]
    assert [b for b in at.button if b.label == "Restart worker"]
    form = at.get("form")[0]
    form.text_input[0].input("newbie")
    form.text_input[1].input("newbies-password")
    at = form.button[0].click().run()
    assert "Added newbie." in _texts(at.success)
    assert accounts.authenticate("newbie", "newbies-password", settings).name == "newbie"


def test_removed_user_is_signed_out(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("root", "roots-password", is_admin=True, settings=settings)
    accounts.add_user("temp", "temps-password", settings=settings)
    at = _sign_in(_admin_page().run(), "temp", "temps-password")
    assert [t.value for t in at.title] == ["Admin"]
    accounts.remove_user("temp", actor="root", settings=settings)
    at.run()
    assert [t.value for t in at.title] == ["Sign in to SynthLab"]


def test_misconfigured_mode_fails_closed(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "passwrd")
    at = _admin_page().run()
    assert "Sign-in is misconfigured" in _texts(at.error)
    assert not at.title


def test_oidc_mode_asks_to_log_in_and_uses_st_user(settings):
    accounts.add_user("gina@lab.org", None, is_admin=True, settings=settings)
    secrets = {"synthlab": {"auth_mode": "oidc"},
               "auth": {"redirect_uri": "http://127.0.0.1:8501/oauth2callback",
                        "cookie_secret": "test-secret", "client_id": "x", "client_secret": "y",
                        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}}
    at = _admin_page()
    at.secrets = secrets
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in to SynthLab"]
    assert [b.label for b in at.button] == ["Log in"]

    at = _admin_page()
    at.secrets = secrets
    at.user = {"is_logged_in": True, "email": "gina@lab.org", "name": "Gina"}
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Admin"]
    identity = at.session_state["_synthlab_identity"]
    assert (identity.name, identity.is_admin, identity.auth_mode) == ("gina@lab.org", True, "oidc")


def _job_panel_script() -> None:
    from webui import boot
    from webui.jobs import render_job_list

    boot()
    render_job_list(("train",), key="t", refresh_seconds=60)


def test_cancel_button_only_for_own_jobs_unless_admin(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("bob", "bobs-password", settings=settings)
    accounts.add_user("alice", "alices-password", settings=settings)
    jobs.submit("train", {}, title="bob's run", created_by="bob", settings=settings)
    mine = jobs.submit("train", {}, title="alice's run", created_by="alice", settings=settings)

    def cancel_buttons(identity: Identity) -> list[str]:
        at = AppTest.from_function(_job_panel_script, default_timeout=TIMEOUT)
        at.session_state["_synthlab_identity"] = identity
        at.run()
        assert not at.exception
        # Others' jobs show a disabled Cancel (with the reason): count the usable ones.
        return [b.key for b in at.button if b.label == "Cancel" and not b.disabled]

    alice = Identity("alice", auth_mode="password", verified=True)
    assert cancel_buttons(alice) == [f"t-cancel-{mine}"]
    # The role is read from the account on each run, not trusted from the session.
    accounts.set_admin("alice", True, settings=settings)
    assert len(cancel_buttons(alice)) == 2


def test_admin_page_check_worker_and_audit_in_mode_none(settings):
    jobs.request_cancel(jobs.submit("train", {}, created_by="bob", settings=settings),
                        by="alice", settings=settings)
    at = _admin_page().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Admin"]
    assert [b for b in at.button if b.label == "Restart worker" and not b.disabled]  # anyone
    assert "not running" in [m.value for m in at.metric]
    audit_table = at.dataframe[-1].value if at.dataframe else None
    assert audit_table is not None and list(audit_table["action"]) == ["cancel"]
    assert list(audit_table["who"]) == ["alice"]
    at = [b for b in at.button if b.label == "Run check"][0].click().run()
    assert not at.exception
    assert "The image folder and the index agree." in _texts(at.success)


def test_server_path_import_is_for_admins_when_sign_in_is_on(settings, monkeypatch, tmp_path):
    from tests.imagemaker import make_imagefolder

    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("bob", "bobs-password", settings=settings)
    accounts.add_user("root", "roots-password", is_admin=True, settings=settings)
    folder = make_imagefolder(tmp_path / "photos", ["apple"], 2)
    page = str(Path(ADMIN_PAGE).parent / "import_data.py")

    def attempt(name: str, password: str) -> AppTest:
        at = _sign_in(AppTest.from_file(page, default_timeout=TIMEOUT).run(), name, password)
        at.radio(key="import_from").set_value("Folder or zip on the server").run()
        at.text_input(key="import_path").input(str(folder))
        return at.button(key="FormSubmitter:import_form-Import").click().run()

    at = attempt("bob", "bobs-password")
    assert "reserved to admins" in _texts(at.error)
    assert jobs.list_jobs(kind="import", settings=settings) == []
    at = attempt("root", "roots-password")
    assert not at.error
    assert len(jobs.list_jobs(kind="import", settings=settings)) == 1
