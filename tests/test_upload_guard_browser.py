"""Uploads before sign-in are refused and nothing is kept; after sign-in they are capped
and dropped at sign-out (issue 13, point 3). On the way, signing out in a second tab
signs the first one out at its next click (point 5).

The attack was three large PUTs to Streamlit's upload endpoint from a browser showing
only the sign-in form. Here the same PUTs (3 x 20 MB) are sent from the page's own script,
with its XSRF token, to its own session id; what the server keeps is read from the
server's ``/_stcore/metrics`` (the UploadedFileManager's byte count) - the server's real
store, not a guess from process memory.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from tests.browser import chromium_missing_reason, launch_browser, start_server, wait_for_app

MB = 2**20
# PUT a zero-filled file of ``size`` bytes to this page's own session, as the uploader does.
_PUT_JS = """async ([sessionId, size, fileId]) => {
  const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_streamlit_xsrf=')) || '')
      .split('=').slice(1).join('=');
  const body = new FormData();
  body.append('file', new Blob([new Uint8Array(size)]), 'big.bin');
  const r = await fetch(`/_stcore/upload_file/${sessionId}/${fileId}`,
                        {method: 'PUT', body, headers: {'X-Xsrftoken': xsrf}});
  return r.status;
}"""


def _held_upload_bytes(url: str) -> int:
    """Bytes the server's UploadedFileManager holds now (0 when it holds no file)."""
    with urllib.request.urlopen(f"{url}/_stcore/metrics?families=cache_memory_bytes",
                                timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'cache_type="UploadedFileManager"[^}]*}\s+(\d+)', text)
    return sum(int(n) for n in found)


def _wait_held(url: str, expected: int, timeout_s: float = 30) -> int:
    """Poll (the metric is cached up to 5 s) until it shows ``expected`` or time is up."""
    deadline = time.monotonic() + timeout_s
    held = _held_upload_bytes(url)
    while held != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        held = _held_upload_bytes(url)
    return held


@pytest.mark.browser
def test_uploads_refused_before_sign_in_and_capped_after(tmp_path) -> None:
    from playwright.sync_api import expect
    from PIL import Image
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    from core.config import Settings
    from core.users import accounts

    if chromium_missing_reason():
        pytest.fail(chromium_missing_reason())
    home = tmp_path / "synthlab-home"
    accounts.add_user("alice", "alices-password", settings=Settings(home=home))
    server = start_server(home, env={"SYNTHLAB_AUTH_MODE": "password",
                                     "SYNTHLAB_MAX_UPLOAD_MB": "25",
                                     "SYNTHLAB_MAX_SESSION_UPLOAD_MB": "50"})
    session_ids: list[str] = []

    def on_frame(payload: bytes | str) -> None:
        # The first message of a session names it (NewSession.initialize.session_id).
        if isinstance(payload, bytes) and not session_ids:
            msg = ForwardMsg()
            try:
                msg.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - not a ForwardMsg: not the one we want
                return
            if msg.WhichOneof("type") == "new_session":
                session_ids.append(msg.new_session.initialize.session_id)

    try:
        with launch_browser() as page:
            page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
            page.goto(server.url)
            expect(page.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            wait_for_app(page)
            assert session_ids, "no session id seen on the websocket"
            sid = session_ids[0]

            def put(size: int, n: int) -> int:
                return page.evaluate(_PUT_JS, [sid, size, f"file-{n}"])

            # Signed out: every upload refused, nothing kept.
            statuses = [put(20 * MB, n) for n in range(3)]
            held = _wait_held(server.url, 0, timeout_s=8)
            assert (statuses, held) == ([403, 403, 403], 0), (statuses, held)

            page.get_by_label("User name", exact=True).fill("alice")
            page.get_by_label("Password", exact=True).fill("alices-password")
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_text("Signed in as")).to_be_visible()
            wait_for_app(page)

            # Signed in: accepted up to 25 MB a file and 50 MB for the session.
            assert [put(20 * MB, 10), put(20 * MB, 11)] == [204, 204]
            assert put(20 * MB, 12) == 413  # would make 60 MB
            assert put(30 * MB, 13) == 413  # one file over 25 MB
            assert put(20 * MB, 11) == 204  # re-sending a file replaces it

            # The Import page lets the server's copy go once it has staged the files.
            png = tmp_path / "apple_1.png"
            Image.new("RGB", (40, 30), (200, 30, 30)).save(png)
            page.get_by_role("link", name="Import").click()
            expect(page.get_by_role("heading", name="Import a dataset")).to_be_visible()
            wait_for_app(page)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(png)
            with_png = 40 * MB + png.stat().st_size
            assert _wait_held(server.url, with_png) == with_png
            page.get_by_role("button", name="Import", exact=True).click()
            expect(page.get_by_text("queued as job")).to_be_visible()
            assert _wait_held(server.url, 40 * MB) == 40 * MB

            # Signing out in another tab of the browser ends this tab's sign-in at its next
            # run (issue 13, point 5: it used to go on reading the Admin page's audit log),
            # and a signed-out tab's files are dropped.
            other = page.context.new_page()
            other.goto(server.url)
            expect(other.get_by_text("Signed in as")).to_be_visible()
            wait_for_app(other)
            other.get_by_role("button", name="Sign out", exact=True).click()
            expect(other.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            page.get_by_role("link", name="Admin").click()
            expect(page.get_by_role("heading", name="Sign in to SynthLab")).to_be_visible()
            expect(page.get_by_role("heading", name="Admin")).to_have_count(0)
            assert _wait_held(server.url, 0) == 0
            assert put(1 * MB, 20) == 403
    finally:
        server.stop(grace_s=3)
