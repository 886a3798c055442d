"""Remembered password sign-ins, so a reload or a new tab needs no new sign-in.

After a password sign-in the browser gets a random token in a cookie; the DB keeps only
the token's SHA-256, the user's name and an expiry. A token is good while it has not
expired and its user still has a password; changing the password or removing the user
ends every remembered sign-in of that user, and signing out ends the browser's own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import User, utcnow
from core.users.identity import AUTH_PASSWORD, Identity
from core.users.models import SignInSession

COOKIE_NAME = "synthlab_session"
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet. Anything else
# in the cookie is not ours and is never looked up (nor written into the page).
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
# Writing last_used_at on every page run would make each click a DB write.
_TOUCH_EVERY = dt.timedelta(hours=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def is_token(value: object) -> bool:
    return isinstance(value, str) and TOKEN_PATTERN.fullmatch(value) is not None


def start_session(name: str, settings: Settings | None = None) -> str | None:
    """Remember ``name``'s sign-in; returns the token for the cookie (None when
    ``session_days`` is 0: the sign-in then lasts as long as the browser tab)."""
    settings = settings or get_settings()
    if settings.session_days <= 0:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()

    def write(session: Session) -> None:
        # Expired rows go whenever someone signs in: no separate clean-up job needed.
        session.execute(delete(SignInSession).where(SignInSession.expires_at < now))
        session.add(SignInSession(token_sha256=_digest(token), user_name=name, created_at=now,
                                  last_used_at=now,
                                  expires_at=now + dt.timedelta(days=settings.session_days)))
    run_write(write, settings)
    return token


def resume_session(token: str | None, settings: Settings | None = None) -> Identity | None:
    """The identity a cookie's token stands for, or None (unknown, expired, user gone)."""
    settings = settings or get_settings()
    if not is_token(token) or settings.session_days <= 0:
        return None
    digest = _digest(token)
    now = utcnow()
    with session_scope(settings) as session:
        row = session.scalar(select(SignInSession).where(SignInSession.token_sha256 == digest))
        if row is None or row.expires_at <= now:
            return None
        user = session.scalar(select(User).where(User.name == row.user_name))
        if user is None or not user.password_hash:
            return None
        identity = Identity(name=user.name, is_admin=bool(user.is_admin),
                            auth_mode=AUTH_PASSWORD, verified=True)
        stale = now - row.last_used_at > _TOUCH_EVERY
    if stale:
        def touch(session: Session) -> None:
            found = session.scalar(select(SignInSession).where(
                SignInSession.token_sha256 == digest))
            if found is not None:
                found.last_used_at = now
        run_write(touch, settings)
    return identity


def password_stamp(password_hash: str | None) -> str | None:
    """A short fingerprint of a stored password hash (None: no password). A browser
    session keeps it from its sign-in, so a later password change is seen on the next
    page run even when no remembered-sign-in token exists (``session_days`` 0)."""
    if not password_hash:
        return None
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:32]


def sign_in_stamp(name: str, settings: Settings | None = None) -> str | None:
    """``name``'s current password stamp (None: no such user or no password). Read just
    after a successful sign-in: ``authenticate`` may have re-hashed the same password."""
    with session_scope(settings or get_settings()) as session:
        user = session.scalar(select(User).where(User.name == name))
        return password_stamp(user.password_hash) if user is not None else None


def check_sign_in(name: str, token: str | None, stamp: str | None,
                  settings: Settings | None = None) -> Identity | None:
    """Is a browser session's sign-in still good? Called on every page run.

    Good means: the user still exists with the same password as at sign-in (``stamp``),
    and the remembered sign-in (``token``, when the session has one) has not been ended
    by signing out in another tab, a password change or removal, nor expired. Returns the
    identity with the user's current role, or None (the page then asks to sign in).
    """
    settings = settings or get_settings()
    now = utcnow()
    with session_scope(settings) as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None or not user.password_hash:
            return None
        # Every sign-in through the gate records a stamp; None is an identity set by other
        # server code (tests), checked for the user, role and token only.
        if stamp is not None and password_stamp(user.password_hash) != stamp:
            return None
        if token is not None:
            row = session.scalar(select(SignInSession).where(
                SignInSession.token_sha256 == _digest(token)))
            if row is None or row.user_name != user.name or row.expires_at <= now:
                return None
        return Identity(name=user.name, is_admin=bool(user.is_admin),
                        auth_mode=AUTH_PASSWORD, verified=True)


def end_session(token: str | None, settings: Settings | None = None) -> None:
    """Forget one remembered sign-in (signing out)."""
    if not is_token(token):
        return
    run_write(lambda session: session.execute(
        delete(SignInSession).where(SignInSession.token_sha256 == _digest(token))), settings)


def end_sessions_of(session: Session, name: str) -> None:
    """Forget every remembered sign-in of ``name``, inside the caller's transaction (a
    password change or a removed account must not leave old browsers signed in)."""
    session.execute(delete(SignInSession).where(SignInSession.user_name == name))


def cookie_script(token: str | None, max_age_seconds: int) -> str:
    """The page script that stores ``token`` in the session cookie (None: deletes it).

    Built only from a checked token and an integer, so no user text reaches the page.
    ``Secure`` is added when the dashboard is served over HTTPS (behind a proxy).
    """
    if token is not None and not is_token(token):
        raise ValueError("not a session token")
    value = token or ""
    age = int(max_age_seconds) if token is not None else 0
    return ("<script>(function(){var s=window.location.protocol==='https:'?'; Secure':'';"
            f"document.cookie='{COOKIE_NAME}={value}; Max-Age={age}; Path=/; SameSite=Strict'+s;"
            "})();</script>")
