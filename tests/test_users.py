"""Accounts, password hashing, sign-in rate limit, permissions, audit and the user CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core import jobs
from core.users import accounts, audit
from core.users.auth_mode import AuthConfigError, resolve_auth_mode
from core.users.identity import Identity, unverified
from core.users.permissions import PermissionDenied, can_modify, cancel_job_as, require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_password_is_hashed_with_argon2_and_verified(settings):
    accounts.add_user("alice", "correct horse", is_admin=True, settings=settings)
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import User

    with session_scope(settings) as session:
        stored = session.scalar(select(User.password_hash).where(User.name == "alice"))
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    who = accounts.authenticate("alice", "correct horse", settings)
    assert who.name == "alice" and who.is_admin and who.verified and who.auth_mode == "password"


def test_wrong_password_and_unknown_name_are_refused_alike(settings):
    accounts.add_user("bob", "bobs-password", settings=settings)
    with pytest.raises(accounts.LoginRefused, match="wrong name or password"):
        accounts.authenticate("bob", "not-his-password", settings)
    with pytest.raises(accounts.LoginRefused, match="wrong name or password"):
        accounts.authenticate("nobody", "bobs-password", settings)
    with pytest.raises(accounts.LoginRefused):
        accounts.authenticate("bob", "", settings)
    # An OIDC-only account (no password) cannot sign in with any password.
    accounts.add_user("carol@lab.org", None, settings=settings)
    with pytest.raises(accounts.LoginRefused):
        accounts.authenticate("carol@lab.org", "not-a-real-password", settings)


def test_too_many_failures_lock_the_name_even_with_the_right_password(settings):
    import dataclasses

    strict = dataclasses.replace(settings, login_max_failures=3, login_window_seconds=600)
    accounts.add_user("dave", "daves-password", settings=strict)
    for _ in range(3):
        with pytest.raises(accounts.LoginRefused, match="wrong"):
            accounts.authenticate("dave", "guess-guess", strict)
    with pytest.raises(accounts.LoginRefused, match="too many failed sign-in attempts"):
        accounts.authenticate("dave", "daves-password", strict)
    # Another name is not affected.
    accounts.add_user("erin", "erins-password", settings=strict)
    assert accounts.authenticate("erin", "erins-password", strict).name == "erin"


def test_account_rules(settings):
    with pytest.raises(accounts.AccountError, match="at least"):
        accounts.add_user("frank", "short", settings=settings)
    with pytest.raises(accounts.AccountError, match="empty"):
        accounts.add_user("   ", "long-enough", settings=settings)
    with pytest.raises(accounts.AccountError, match="control"):
        accounts.add_user("a\x00b", "long-enough", settings=settings)
    accounts.add_user("root", "long-enough", is_admin=True, settings=settings)
    with pytest.raises(accounts.AccountError, match="already exists"):
        accounts.add_user("root", "long-enough", settings=settings)
    with pytest.raises(accounts.AccountError, match="last admin"):
        accounts.set_admin("root", False, settings=settings)
    with pytest.raises(accounts.AccountError, match="last admin"):
        accounts.remove_user("root", settings=settings)
    actions = [e.action for e in audit.entries(settings=settings)]
    assert actions == ["user_add"]


def test_permissions_by_mode_and_role():
    laptop = unverified("someone")
    alice = Identity("alice", auth_mode="password", verified=True)
    boss = Identity("boss", is_admin=True, auth_mode="oidc", verified=True)
    for action in ("delete", "relabel", "cancel"):
        assert can_modify(laptop, "bob", action)
        assert can_modify(alice, "alice", action)
        assert not can_modify(alice, "bob", action)
        assert not can_modify(alice, None, action)
        assert can_modify(boss, "bob", action)
    assert not can_modify(alice, "alice", "manage_users")
    assert can_modify(boss, None, "manage_users")
    with pytest.raises(PermissionDenied, match="belongs to bob"):
        require(alice, "bob", "delete", "image 3")
    with pytest.raises(ValueError):
        can_modify(alice, "alice", "launch_rockets")


def test_cancelling_others_jobs_needs_admin_and_is_audited(settings):
    # Password-mode identities are re-read from their accounts at each action (issue 13).
    for name in ("alice", "bob"):
        accounts.add_user(name, f"{name}s-password", settings=settings)
    accounts.add_user("boss", "bosss-password", is_admin=True, settings=settings)
    job_id = jobs.submit("train", {}, created_by="bob", settings=settings)
    alice = Identity("alice", auth_mode="password", verified=True)
    with pytest.raises(PermissionDenied):
        cancel_job_as(alice, job_id, settings)
    assert jobs.get_job(job_id, settings).status == jobs.QUEUED
    bob = Identity("bob", auth_mode="password", verified=True)
    assert cancel_job_as(bob, job_id, settings)
    assert jobs.get_job(job_id, settings).status == jobs.CANCELLED
    other = jobs.submit("train", {}, created_by="bob", settings=settings)
    assert cancel_job_as(Identity("boss", is_admin=True, auth_mode="password", verified=True),
                         other, settings)
    log = audit.entries(action="cancel", settings=settings)
    assert [(e.actor, e.target_id) for e in log] == [("boss", str(other)), ("bob", str(job_id))]
    assert log[0].detail["owner"] == "bob"


def test_auth_mode_resolution(settings):
    import dataclasses

    assert resolve_auth_mode(settings, {}) == "none"
    assert resolve_auth_mode(settings, {"synthlab": {"auth_mode": "password"}}) == "password"
    strict = dataclasses.replace(settings, auth_mode="password")
    assert resolve_auth_mode(strict, {}) == "password"
    with pytest.raises(AuthConfigError, match="unknown auth_mode"):
        resolve_auth_mode(settings, {"synthlab": {"auth_mode": "pasword"}})
    with pytest.raises(AuthConfigError, match=r"\[auth\]"):
        resolve_auth_mode(settings, {"synthlab": {"auth_mode": "oidc"}})
    assert resolve_auth_mode(settings, {"synthlab": {"auth_mode": "oidc"},
                                        "auth": {"client_id": "x"}}) == "oidc"


def test_oidc_identity_takes_admin_role_from_local_account(settings):
    accounts.add_user("gina@lab.org", None, is_admin=True, settings=settings)
    gina = accounts.oidc_identity({"email": "gina@lab.org", "sub": "123"}, settings)
    assert gina.name == "gina@lab.org" and gina.is_admin and gina.auth_mode == "oidc"
    hank = accounts.oidc_identity({"sub": "456"}, settings)
    assert hank.name == "456" and not hank.is_admin
    with pytest.raises(accounts.LoginRefused):
        accounts.oidc_identity({}, settings)


def test_user_cli(settings, monkeypatch, capsys):
    import io

    from core.cli import main

    # The real entry point once, as a script would call it ...
    done = subprocess.run([sys.executable, "-m", "core", "user", "add", "ivy", "--admin",
                           "--password-stdin"], input="ivys-password\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert accounts.authenticate("ivy", "ivys-password", settings).is_admin

    # ... the rest in-process (same parser and handlers, no interpreter start-up each time).
    def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = cli("user", "add", "ivy", "--password-stdin", stdin="another-pass\n")
    assert code == 2 and "already exists" in err
    code, _, err = cli("user", "passwd", "ivy", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least" in err
    code, _, err = cli("user", "add", "jim")  # no terminal to ask on
    assert code == 2 and "--password-stdin" in err
    assert cli("user", "passwd", "ivy", "--password-stdin", stdin="new-password\n")[0] == 0
    assert accounts.authenticate("ivy", "new-password", settings)
    code, out, _ = cli("user", "list")
    assert code == 0 and "ivy" in out and "admin" in out
    code, out, _ = cli("audit")
    assert "user_passwd" in out and "user_add" in out


def test_remembered_sign_ins_resume_expire_and_end(settings):
    import dataclasses
    import datetime as dt

    from sqlalchemy import select, update

    from core.db.engine import run_write, session_scope
    from core.users import sessions
    from core.users.models import SignInSession

    accounts.add_user("alice", "correct horse", is_admin=True, settings=settings)
    accounts.add_user("bob", "battery staple", settings=settings)
    token = sessions.start_session("alice", settings)
    assert sessions.is_token(token)
    with session_scope(settings) as session:
        stored = session.scalars(select(SignInSession.token_sha256)).all()
    assert token not in stored and len(stored) == 1  # only the hash is kept

    who = sessions.resume_session(token, settings)
    assert (who.name, who.is_admin, who.verified) == ("alice", True, True)
    assert sessions.resume_session("A" * 43, settings) is None  # well-formed, unknown
    assert sessions.resume_session("not a token", settings) is None

    # A role change shows; signing out ends only this browser's sign-in.
    accounts.set_admin("bob", True, settings=settings)
    bobs = sessions.start_session("bob", settings)
    other_tab_of_bob = sessions.start_session("bob", settings)
    sessions.end_session(bobs, settings)
    assert sessions.resume_session(bobs, settings) is None
    assert sessions.resume_session(other_tab_of_bob, settings).is_admin

    # A new password ends every remembered sign-in of that user, not others'.
    accounts.set_password("bob", "a new long password", settings=settings)
    assert sessions.resume_session(other_tab_of_bob, settings) is None
    assert sessions.resume_session(token, settings) is not None

    # Expired sign-ins are refused, and cleared by the next sign-in.
    run_write(lambda s: s.execute(update(SignInSession).values(
        expires_at=dt.datetime(2000, 1, 1))), settings)
    assert sessions.resume_session(token, settings) is None
    fresh = sessions.start_session("alice", settings)
    with session_scope(settings) as session:
        assert session.scalar(select(SignInSession.user_name)) == "alice"
        assert len(session.scalars(select(SignInSession.id)).all()) == 1

    # Removing the user ends theirs; session_days = 0 remembers nothing.
    accounts.set_admin("bob", True, settings=settings)
    accounts.remove_user("alice", settings=settings)
    assert sessions.resume_session(fresh, settings) is None
    tab_only = dataclasses.replace(settings, session_days=0)
    assert sessions.start_session("bob", tab_only) is None
