"""The shipped reverse-proxy configuration does what the README says (issue 13, point 9).

``docs/nginx-synthlab.conf`` runs in a real nginx (Debian's ``/usr/sbin/nginx``; the test
is skipped without it, and fails when ``CI`` is set) in front of a stand-in upstream that
records what reaches it: the metrics endpoint is closed, media and uploads need a sign-in
cookie, and an oversized upload is refused from its Content-Length before any body.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import free_port

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "docs" / "nginx-synthlab.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class _Upstream(BaseHTTPRequestHandler):
    """Stands in for Streamlit: answers 200 and records every request that got through."""

    seen: list[tuple[str, str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"upstream")

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *args: object) -> None:  # quiet
        pass


@contextlib.contextmanager
def _nginx(tmp_path: Path) -> Iterator[int]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    text = SNIPPET.read_text()
    # Local plain HTTP instead of TLS on 443, and the stand-in upstream instead of :8501.
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
    text = "\n".join(line for line in text.splitlines() if "ssl_certificate" not in line)
    text = text.replace("127.0.0.1:8501", f"127.0.0.1:{upstream.server_address[1]}")
    temp = tmp_path / "nginx"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = temp / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nmaster_process off;\npid {temp}/nginx.pid;\n"
        f"error_log {temp}/error.log;\nevents {{}}\nhttp {{\naccess_log off;\n"
        f"client_body_temp_path {temp}/body;\nproxy_temp_path {temp}/proxy;\n"
        f"fastcgi_temp_path {temp}/fcgi;\nuwsgi_temp_path {temp}/uwsgi;\n"
        f"scgi_temp_path {temp}/scgi;\n{text}\n}}\n")
    process = subprocess.Popen([NGINX, "-p", str(temp), "-c", str(conf)],  # noqa: S603
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {process.stderr.read().decode()}")
            with contextlib.suppress(OSError):
                if _request(port, "GET", "/synthlab/")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start")
            time.sleep(0.1)
        _Upstream.seen.clear()
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def _request(port: int, method: str, path: str, *, cookie: str | None = None,
             body: bytes | None = None, announce: int | None = None) -> tuple[int, str]:
    """One request; ``announce`` sends only a Content-Length header of that size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path)
        if cookie:
            conn.putheader("Cookie", cookie)
        length = announce if announce is not None else len(body or b"")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if body and announce is None:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def test_shipped_nginx_config_closes_metrics_media_and_uploads(tmp_path) -> None:
    if not Path(NGINX).is_file():
        if os.environ.get("CI"):
            pytest.fail("nginx is needed in CI (apt-get install nginx)")
        pytest.skip("nginx not installed")
    signed_in = "synthlab_session=" + "a" * 43
    upload = "/synthlab/_stcore/upload_file/session-id/file-id"
    with _nginx(tmp_path) as port:
        assert _request(port, "GET", "/synthlab/")[0] == 200
        assert _request(port, "GET", "/synthlab/_stcore/metrics")[0] == 404
        assert _request(port, "GET", "/synthlab/_stcore/metrics?families=x",
                        cookie=signed_in)[0] == 404
        assert _request(port, "GET", "/synthlab/media/abc.png")[0] == 403
        assert _request(port, "GET", "/synthlab/media/abc.png", cookie=signed_in)[0] == 200
        assert _request(port, "GET", "/synthlab/media/abc.png",
                        cookie="_streamlit_user=x")[0] == 200  # auth mode oidc
        assert _request(port, "PUT", upload, body=b"x" * 2**20)[0] == 403
        assert _request(port, "PUT", upload, body=b"x" * 2**20, cookie=signed_in)[0] == 200
        # Announced 3 GB: refused from the header alone (the body is never sent).
        assert _request(port, "PUT", upload, announce=3 * 2**30, cookie=signed_in)[0] == 413
        # Other routes take no body.
        assert _request(port, "PUT", "/synthlab/x", body=b"x" * 2 * 2**20)[0] == 413
        assert _Upstream.seen == [("GET", "/synthlab/"), ("GET", "/synthlab/media/abc.png"),
                                  ("GET", "/synthlab/media/abc.png"), ("PUT", upload)]


def test_readme_points_to_the_snippet() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/nginx-synthlab.conf" in readme
    for must in ("/_stcore/metrics", "/media/", "client_max_body_size"):
        assert must in readme, must
