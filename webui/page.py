"""Streamlit helpers shared by the pages: start-up, the current user, the sidebar.

Pages stay thin: widgets here and in ``pages/``, logic in ``core/``.
"""

from __future__ import annotations

import streamlit as st

from core.config import Settings, get_settings
from core.db.engine import init_db


@st.cache_resource(show_spinner=False)
def _device_future():  # noqa: ANN202 - a Future of core.device.DeviceInfo
    """Detect the device once per process, in a thread: it imports torch (seconds on a
    busy machine), which only the pages that show the device or use torch need to wait for;
    every other page's first render goes on meanwhile (``boot`` starts it)."""
    from concurrent.futures import ThreadPoolExecutor

    def detect():  # noqa: ANN202
        from core.device import detect_device

        return detect_device()

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthlab-device")
    future = executor.submit(detect)
    executor.shutdown(wait=False)
    return future


def boot() -> Settings:
    """Run once per script run: migrate the DB (once per process) and keep a worker alive.

    With sign-in on (auth mode ``password`` or ``oidc``) it also stands at the door: a
    visitor who has not signed in sees the sign-in form and nothing else.
    """
    _leave_legacy_multipage_mode()
    settings = get_settings()
    try:
        init_db(settings)
    except OSError as exc:
        from core.db.engine import DataFolderError

        if not isinstance(exc, DataFolderError):
            raise
        st.error(error_text(exc.strerror))
        st.stop()
    _auth_gate(settings)
    _device_future()  # started in the background; see device_info()
    if not st.session_state.get("_worker_checked"):
        from core.worker import ensure_worker

        # Tied to this server: stopping ``streamlit run`` stops the worker it started.
        ensure_worker(settings, stop_with_this_process=True)
        st.session_state["_worker_checked"] = True
    return settings


def _leave_legacy_multipage_mode() -> None:
    """Run every page through ``app.py``'s navigation, even from a bookmark.

    Streamlit treats a ``pages/`` folder as its old multipage layout until some session in
    the process has called ``st.navigation``; so after a server restart, the first visitor
    who opens a bookmarked page (``/gallery``) got that page without ``app.py``: no sidebar,
    no name, no layout. Switching the flag and rerunning sends the same URL through
    ``app.py`` (the page hash is the URL path either way).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_user() -> str:
    """Who is using this browser session (auth mode ``none``: a name picked in the sidebar)."""
    return current_identity().name


def escape_markdown(text: object) -> str:
    """User text made inert inside Streamlit markdown (no links, images, emphasis, HTML).

    Markdown never renders raw HTML here, but a user-chosen name such as ``![](http://x)``
    would still make every viewer's browser fetch a URL; escape before interpolating.
    """
    import re

    # Mid-line text only: list markers (- + 1.) need no escape there, and names such as
    # "fruit-photos" stay readable in the page source and in tests.
    escaped = re.sub(r"([\\`*_\[\]()<>#!|~:$])", r"\\\1", str(text))
    # Escapes are not enough for bare web addresses: Streamlit's GFM autolinking runs on the
    # parsed text, where "http\://" is "http://" again (seen in Chromium: every escaped URL
    # was a link). An invisible WORD JOINER (U+2060) after the scheme or "www", and after
    # "@" (e-mail addresses), breaks the pattern and leaves the text readable.
    escaped = re.sub(r"(?i)\b(https?|ftp|www|mailto|xmpp)(?=\\?[:.])", "\\1\u2060", escaped)
    return escaped.replace("@", "@\u2060")


def error_text(exc: object) -> str:
    """An exception (or message) for ``st.error``: a sentence with a capital first letter,
    user text in it escaped (messages quote names, paths and typed input)."""
    from core.wording import sentence

    return escape_markdown(sentence(exc))


# --- sign-in (issue 8) ------------------------------------------------------------------

_IDENTITY_KEY = "_synthlab_identity"


def current_identity():  # noqa: ANN201 - core.users.identity.Identity
    """The signed-in identity (name, admin role, auth mode) of this browser session."""
    from core.users.identity import unverified

    identity = st.session_state.get(_IDENTITY_KEY)
    if identity is not None:
        return identity
    return unverified(st.session_state.get("user_name"))


def _secrets() -> dict:
    """``.streamlit/secrets.toml`` as a dict; empty when there is none."""
    try:
        return {key: st.secrets[key] for key in st.secrets.keys()}
    except Exception:  # noqa: BLE001 - a missing or unreadable secrets file means no secrets
        return {}


def auth_mode(settings: Settings) -> str:
    from core.users.auth_mode import resolve_auth_mode

    return resolve_auth_mode(settings, _secrets())


def _auth_gate(settings: Settings) -> None:
    from webui.uploads import set_uploads_allowed

    # Only a session that passes the gate on this run may hold uploads; one that does not
    # (signed out, never signed in, sign-in misconfigured) has its files dropped now.
    passed = False
    try:
        _check_sign_in(settings)
        passed = True
    finally:
        set_uploads_allowed(passed)


def _check_sign_in(settings: Settings) -> None:
    from core.users.auth_mode import AuthConfigError
    from core.users.identity import AUTH_NONE, AUTH_OIDC

    try:
        mode = auth_mode(settings)
    except AuthConfigError as exc:
        # Fail closed: a mistyped auth mode must not open the server to everyone.
        st.error(f"Sign-in is misconfigured: {exc}")
        st.stop()
    if mode == AUTH_NONE:
        st.session_state.pop(_IDENTITY_KEY, None)
        return
    if mode == AUTH_OIDC:
        _oidc_gate(settings)
    else:
        _password_gate(settings)


_TOKEN_KEY = "_synthlab_session_token"
_COOKIE_KEY = "_synthlab_cookie"  # what the next finished run writes into the cookie
_REFUSED_KEY = "_synthlab_refused_token"
# The password stamp (core.users.sessions.password_stamp) of this session's sign-in.
_STAMP_KEY = "_synthlab_password_stamp"


def _cookie_token() -> str | None:
    from core.users.sessions import COOKIE_NAME

    try:
        return st.context.cookies.get(COOKIE_NAME)
    except Exception:  # noqa: BLE001 - no browser context (AppTest, a bare script run)
        return None


def _write_cookie(settings: Settings) -> None:
    """Store or delete the remembered sign-in in the browser, once, from a page run that
    goes on to finish (a run cut short by ``st.rerun`` may never reach the browser)."""
    from core.users.sessions import cookie_script

    if _COOKIE_KEY not in st.session_state:
        return
    token = st.session_state.pop(_COOKIE_KEY)
    st.html(cookie_script(token, settings.session_days * 86_400), unsafe_allow_javascript=True)


def _password_gate(settings: Settings) -> None:
    from core.users import accounts, sessions
    from core.users.identity import AUTH_PASSWORD, Identity

    identity = st.session_state.get(_IDENTITY_KEY)
    if identity is None:
        # A reload or a new tab: the browser may remember an earlier sign-in.
        # (The cookie as it was when this tab connected; one refused is not looked up again.)
        token = _cookie_token()
        if token and token != st.session_state.get(_REFUSED_KEY):
            identity = sessions.resume_session(token, settings)
            if identity is not None:
                st.session_state[_IDENTITY_KEY] = identity
                st.session_state[_TOKEN_KEY] = token
                st.session_state[_STAMP_KEY] = sessions.sign_in_stamp(identity.name, settings)
            else:
                st.session_state[_REFUSED_KEY] = token
                st.session_state[_COOKIE_KEY] = None  # expired or ended elsewhere: drop it
    if identity is not None and identity.auth_mode == AUTH_PASSWORD:
        # Every page run (a click, a navigation, a reload) re-checks the sign-in: a removed
        # user, a changed password, or a token ended by signing out in another tab signs
        # this tab out; a changed role applies at once.
        current = sessions.check_sign_in(identity.name, st.session_state.get(_TOKEN_KEY),
                                         st.session_state.get(_STAMP_KEY), settings)
        if current is not None:
            if current.is_admin != identity.is_admin:
                st.session_state[_IDENTITY_KEY] = Identity(
                    identity.name, current.is_admin, AUTH_PASSWORD, verified=True)
            return
        st.session_state.pop(_IDENTITY_KEY, None)
        token = st.session_state.pop(_TOKEN_KEY, None)
        st.session_state.pop(_STAMP_KEY, None)
        if token is not None:
            # Not looked up again from the cookie, and the browser forgets it.
            st.session_state[_REFUSED_KEY] = token
            st.session_state[_COOKIE_KEY] = None
    _write_cookie(settings)
    st.title("Sign in to SynthLab")
    with st.form("synthlab_sign_in", clear_on_submit=True):
        name = st.text_input("User name", key="_sign_in_name")
        password = st.text_input("Password", type="password", key="_sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            identity = accounts.authenticate(name, password, settings)
        except accounts.LoginRefused as exc:
            st.error(error_text(exc))  # it may quote the name typed
        else:
            st.session_state[_IDENTITY_KEY] = identity
            st.session_state[_STAMP_KEY] = sessions.sign_in_stamp(identity.name, settings)
            token = sessions.start_session(identity.name, settings)
            if token is not None:
                st.session_state[_TOKEN_KEY] = token
                st.session_state[_COOKIE_KEY] = token
            st.rerun()
    st.caption("No account? Ask an admin to run `python -m core user add NAME`.")
    # The form is drawn: torch loads in the background while the visitor types, not after
    # they press "Sign in" (started no sooner, so it does not slow the form itself down).
    _device_future()
    st.stop()


def _oidc_gate(settings: Settings) -> None:
    from core.users import accounts

    if not st.user.is_logged_in:
        st.session_state.pop(_IDENTITY_KEY, None)
        st.title("Sign in to SynthLab")
        st.write("This server signs you in through your organisation's identity provider.")
        provider = (_secrets().get("synthlab") or {}).get("oidc_provider")
        if st.button("Log in", type="primary", key="_oidc_login"):
            if provider:
                st.login(provider)
            else:
                st.login()
        st.stop()
    try:
        st.session_state[_IDENTITY_KEY] = accounts.oidc_identity(st.user.to_dict(), settings)
    except accounts.LoginRefused as exc:
        st.error(error_text(exc))  # it quotes the provider's claims
        st.stop()


def _sign_out() -> None:
    from core.users.identity import AUTH_OIDC
    from core.users.sessions import end_session

    identity = st.session_state.pop(_IDENTITY_KEY, None)
    token = st.session_state.pop(_TOKEN_KEY, None)
    if token is not None:
        end_session(token)
        st.session_state[_COOKIE_KEY] = None
        st.session_state[_REFUSED_KEY] = token
    if identity is not None and identity.auth_mode == AUTH_OIDC:
        st.logout()


_NAME_WRITTEN_KEY = "_synthlab_name_written"  # the name this session last put in the cookie


def _remembered_name() -> None:
    """On a session's first run (a reload, a new tab), the name this browser remembers."""
    from core.users.name_cookie import COOKIE_NAME, name_from_cookie

    if _NAME_WRITTEN_KEY in st.session_state:
        return
    try:
        raw = st.context.cookies.get(COOKIE_NAME)
    except Exception:  # noqa: BLE001 - no browser context (AppTest, a bare script run)
        raw = None
    name = name_from_cookie(raw)
    if name and not st.session_state.get("user_name"):
        st.session_state["user_name"] = name
    st.session_state[_NAME_WRITTEN_KEY] = name or ""


def _remember_name() -> None:
    """Store a changed name in the browser's cookie (a name it refuses is not stored)."""
    from core.users.name_cookie import clean_name, name_cookie_script

    typed = str(st.session_state.get("user_name") or "")
    name = clean_name(typed) or ""
    if typed.strip() and not name:
        st.caption("This name is not remembered: at most 64 printable characters.")
        return
    if name != st.session_state.get(_NAME_WRITTEN_KEY):
        st.html(name_cookie_script(name or None), unsafe_allow_javascript=True)
        st.session_state[_NAME_WRITTEN_KEY] = name


def sidebar(settings: Settings) -> None:
    with st.sidebar:
        _write_cookie(settings)
        identity = current_identity()
        if identity.verified:
            st.caption(f"Signed in as **{escape_markdown(identity.label)}**")
            if st.button("Sign out", key="_sign_out"):
                _sign_out()
                st.rerun()
        else:
            _remembered_name()
            st.text_input("Your name", key="user_name", placeholder="anonymous",
                          help="Recorded on every import, job and quiz answer you make. "
                               "This browser remembers it.")
            _remember_name()
        device = _device_future()
        # Not waited for: the sidebar is drawn before the page, on every page.
        st.caption(f"Device: {device.result().label}" if device.done() else "Device: checking...")
        st.caption(f"Data: `{settings.home_path}`")


def device_info():  # noqa: ANN201 - core.device.DeviceInfo
    """This machine's device (waits for the detection ``boot`` started)."""
    return _device_future().result()
