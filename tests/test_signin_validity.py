"""An open tab re-checks its sign-in on every run (issue 13, point 5).

A password change (``python -m core user passwd``), signing out in another tab, or the
remembered sign-in being ended must sign an already open tab out on its next run, with or
without a remembered sign-in token (``session_days`` 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.users import accounts, sessions

TIMEOUT = 60
ADMIN_PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "admin.py")
SIGN_IN = ["Sign in to SynthLab"]


def _signed_in_tab(name: str, password: str) -> AppTest:
    at = AppTest.from_file(ADMIN_PAGE, default_timeout=TIMEOUT).run()
    at.text_input(key="_sign_in_name").input(name)
    at.text_input(key="_sign_in_password").input(password)
    at = at.button[0].click().run()
    assert [t.value for t in at.title] == ["Admin"], [t.value for t in at.title]
    return at


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


@pytest.mark.parametrize("session_days", ["14", "0"])
def test_password_change_signs_open_tab_out(settings, monkeypatch, session_days: str) -> None:
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    monkeypatch.setenv("SYNTHLAB_SESSION_DAYS", session_days)
    accounts.add_user("bob", "bobs-password", settings=settings)
    tab = _signed_in_tab("bob", "bobs-password")
    assert tab.run() and _titles(tab) == ["Admin"]  # a plain rerun keeps the sign-in

    accounts.set_password("bob", "bobs-new-password", settings=settings)
    tab.run()
    assert _titles(tab) == SIGN_IN
    assert "_synthlab_identity" not in tab.session_state
    tab.run()  # and it stays out
    assert _titles(tab) == SIGN_IN


def test_sign_out_in_another_tab_ends_this_one(settings, monkeypatch) -> None:
    monkeypatch.setenv("SYNTHLAB_AUTH_MODE", "password")
    accounts.add_user("bob", "bobs-password", settings=settings)
    tab = _signed_in_tab("bob", "bobs-password")
    token = tab.session_state["_synthlab_session_token"]
    # Another tab of the same browser shares the cookie's token; signing out there ends it.
    sessions.end_session(token, settings)
    tab.run()
    assert _titles(tab) == SIGN_IN


def test_check_sign_in_core(settings) -> None:
    accounts.add_user("carol", "carols-password", settings=settings)
    token = sessions.start_session("carol", settings)
    stamp = sessions.sign_in_stamp("carol", settings)
    assert sessions.check_sign_in("carol", token, stamp, settings).name == "carol"
    assert sessions.check_sign_in("carol", None, stamp, settings) is not None
    assert sessions.check_sign_in("carol", token, "0" * 32, settings) is None  # other password
    accounts.add_user("mallory", "mallorys-password", settings=settings)
    other = sessions.sign_in_stamp("mallory", settings)
    assert sessions.check_sign_in("mallory", token, other, settings) is None  # not her token
    sessions.end_session(token, settings)
    assert sessions.check_sign_in("carol", token, stamp, settings) is None
