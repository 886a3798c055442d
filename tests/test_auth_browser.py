"""Password sign-in in a real browser: nothing before sign-in, wrong password refused,
the sign-in remembered across a reload and a new tab until signing out."""

from __future__ import annotations

import time

import pytest

from tests.browser import chromium_missing_reason, launch_browser, start_server
from tests.crashjobs import stop_dashboard_worker


@pytest.mark.browser
@pytest.mark.slow
def test_password_gate_in_the_browser(tmp_path, output_dir):
    from playwright.sync_api import expect

    from core.config import Settings
    from core.users import accounts

    if chromium_missing_reason():
        pytest.fail(chromium_missing_reason())
    home = tmp_path / "synthlab-home"
    accounts.add_user("alice", "alices-password", settings=Settings(home=home))
    server = start_server(home, env={"SYNTHLAB_AUTH_MODE": "password"})
    try:
        with launch_browser() as page:
            page.set_default_timeout(60_000)
            page.goto(server.url + "/gallery")  # a bookmark does not get past the gate
            expect(page.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            assert page.get_by_role("link", name="Gallery", exact=True).count() == 0
            # No page names at all, not even the list of pages/ that Streamlit shows the
            # first visitor after a server start (issue 13, point 6).
            expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
            assert page.get_by_role("link", name="gallery").count() == 0
            page.get_by_label("User name", exact=True).fill("alice")
            page.get_by_label("Password", exact=True).fill("wrong-password")
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_text("wrong name or password")).to_be_visible()
            page.screenshot(path=str(output_dir / "refused.png"))

            page.get_by_label("User name", exact=True).fill("alice")
            page.get_by_label("Password", exact=True).fill("alices-password")
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_text("Signed in as")).to_be_visible()
            # Back on the page the bookmark asked for, with the form gone.
            expect(page.get_by_role("heading", name="Gallery", exact=True)).to_be_visible()
            expect(page.get_by_text("Sign in to SynthLab")).to_have_count(0)
            expect(page.get_by_text("wrong name or password")).to_have_count(0)
            expect(page.get_by_text(" images · page 1 of 1")).to_be_visible()
            assert page.get_by_label("Your name", exact=True).count() == 0
            page.screenshot(path=str(output_dir / "signed-in.png"))

            # Remembered: a reload and a new tab need no new sign-in. The cookie is written by
            # a script at the end of the signed-in page's run, which can come after "Signed
            # in as" shows (seen on a loaded host): reload once the browser has it.
            page.wait_for_function("document.cookie.includes('synthlab_session=')")
            page.reload()
            expect(page.get_by_text("Signed in as")).to_be_visible()
            expect(page.get_by_role("heading", name="Gallery", exact=True)).to_be_visible()
            tab = page.context.new_page()
            tab.goto(server.url + "/")
            expect(tab.get_by_text("Signed in as")).to_be_visible()
            tab.close()
            cookie = next(c for c in page.context.cookies() if c["name"] == "synthlab_session")
            assert cookie["sameSite"] == "Strict" and cookie["expires"] > time.time() + 86_400

            # Signing out ends it: the form is back, and stays after a reload.
            page.get_by_role("button", name="Sign out", exact=True).click()
            expect(page.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            page.reload()
            expect(page.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            expect(page.get_by_text("Signed in as")).to_have_count(0)
            page.wait_for_timeout(1000)
            assert not [c for c in page.context.cookies() if c["name"] == "synthlab_session"
                        and c["value"]]
    finally:
        server.stop()
        stop_dashboard_worker(home)
