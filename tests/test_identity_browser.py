"""In Chromium, no-sign-in mode: "Your name" survives a reload (a cookie), so what the
user does next is not attributed to "anonymous" (issue 15). The name is user text written
into a page script: one that tries to end the script runs nothing and comes back whole."""

from __future__ import annotations

import pytest

from tests.browser import browser_page, live_server, wait_for_app  # noqa: F401 - fixtures

NAME = "Zoë </script><img src=x onerror=\"window.__pwned=1\"> 'O\"Brien"


@pytest.mark.browser
def test_the_name_survives_a_reload_and_runs_no_script(live_server, browser_page,  # noqa: F811
                                                       output_dir):
    from core.users.name_cookie import COOKIE_NAME

    page = browser_page
    page.goto(live_server.url)
    wait_for_app(page)
    field = page.get_by_label("Your name", exact=True)
    field.fill(NAME)
    field.press("Enter")
    wait_for_app(page)
    page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")

    page.reload()
    wait_for_app(page)
    field = page.get_by_label("Your name", exact=True)
    field.wait_for()
    page.screenshot(path=output_dir / "after-reload.png")
    assert field.input_value() == NAME
    assert page.evaluate("window.__pwned") is None

    # Clearing the name forgets it: the next reload starts anonymous.
    field.fill("")
    field.press("Enter")
    wait_for_app(page)
    page.wait_for_function(f"!document.cookie.includes('{COOKIE_NAME}=')")
    page.reload()
    wait_for_app(page)
    assert page.get_by_label("Your name", exact=True).input_value() == ""
    assert "Traceback" not in live_server.log_tail()
