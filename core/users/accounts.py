"""Local accounts for auth mode ``password`` (and admin roles for ``oidc`` users).

Passwords are hashed with Argon2id (argon2-cffi); only the hash is stored. Sign-in
attempts are recorded in the DB and a name with too many recent failures is refused for
a while, whichever browser session or server process the attempts come from. Each attempt
is recorded before its password is checked, so a burst of simultaneous attempts cannot
all pass the count while the slow hashes run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import User, utcnow
from core.users import audit, sessions
from core.users.identity import AUTH_OIDC, AUTH_PASSWORD, Identity
from core.users.models import LoginAttempt

MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 120
_hasher = PasswordHasher()
# Verified against when the name does not exist, so that a wrong name takes as long as a
# wrong password and does not reveal which names exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AccountError(ValueError):
    """A user-management request that cannot be done (the message says why)."""


class LoginRefused(Exception):
    """Sign-in refused: wrong name or password, or too many attempts."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    is_admin: bool
    has_password: bool
    created_at: dt.datetime


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def clean_name(name: str) -> str:
    """A user name as stored: trimmed, Unicode-normalised, printable, not too long."""
    cleaned = unicodedata.normalize("NFC", (name or "").strip())
    if not cleaned:
        raise AccountError("a user name cannot be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise AccountError(f"a user name has at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise AccountError("a user name cannot contain control characters")
    return cleaned


def check_password_strength(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def _info(user: User) -> UserInfo:
    return UserInfo(user.name, bool(user.is_admin), bool(user.password_hash), user.created_at)


def _find(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def _admin_check(session: Session, actor: "str | Identity | None", target: str) -> str:
    """Account changes from a page carry the acting ``Identity``: it must be an admin *now*
    (read in this transaction), not when their tab signed in. A plain name (the CLI, run
    by whoever owns the server) is trusted. Returns the name to audit."""
    if isinstance(actor, Identity):
        from core.users.permissions import require_current

        require_current(actor, None, "manage_users", f"user {target}", session=session)
        return actor.name
    return actor or "cli"


def _guarded(write, settings: Settings | None):  # noqa: ANN001, ANN202 - run_write's types
    from core.users.permissions import refusals_audited

    with refusals_audited(settings):
        return run_write(write, settings)


def add_user(name: str, password: str | None = None, *, is_admin: bool = False,
             actor: "str | Identity | None" = None, settings: Settings | None = None) -> UserInfo:
    """Create an account. ``password=None`` makes an account that signs in only via OIDC."""
    name = clean_name(name)
    if password is not None:
        check_password_strength(password)
    password_hash = hash_password(password) if password is not None else None

    def write(session: Session) -> UserInfo:
        by = _admin_check(session, actor, name)
        if _find(session, name) is not None:
            raise AccountError(f"user {name!r} already exists")
        user = User(name=name, password_hash=password_hash, is_admin=is_admin)
        session.add(user)
        session.flush()
        audit.record(session, by, "user_add", target_kind="user", target_id=name,
                     detail={"admin": is_admin})
        return _info(user)
    return _guarded(write, settings)


def set_password(name: str, password: str, *, actor: "str | Identity | None" = None,
                 settings: Settings | None = None) -> None:
    check_password_strength(password)
    password_hash = hash_password(password)

    def write(session: Session) -> None:
        by = _admin_check(session, actor, name)
        user = _find(session, clean_name(name))
        if user is None:
            raise AccountError(f"no user named {name!r}")
        user.password_hash = password_hash
        sessions.end_sessions_of(session, user.name)
        audit.record(session, by, "user_passwd", target_kind="user", target_id=name)
    _guarded(write, settings)


def set_admin(name: str, is_admin: bool, *, actor: "str | Identity | None" = None,
              settings: Settings | None = None) -> None:
    def write(session: Session) -> None:
        by = _admin_check(session, actor, name)
        user = _find(session, clean_name(name))
        if user is None:
            raise AccountError(f"no user named {name!r}")
        if not is_admin and user.is_admin and _admin_count(session) <= 1:
            raise AccountError("cannot remove the last admin")
        user.is_admin = is_admin
        audit.record(session, by, "user_admin", target_kind="user", target_id=name,
                     detail={"admin": is_admin})
    _guarded(write, settings)


def remove_user(name: str, *, actor: "str | Identity | None" = None,
                settings: Settings | None = None) -> None:
    """Delete an account. What the user made stays, still recorded under their name."""
    def write(session: Session) -> None:
        by = _admin_check(session, actor, name)
        user = _find(session, clean_name(name))
        if user is None:
            raise AccountError(f"no user named {name!r}")
        if user.is_admin and _admin_count(session) <= 1:
            raise AccountError("cannot remove the last admin")
        session.delete(user)
        sessions.end_sessions_of(session, user.name)
        audit.record(session, by, "user_remove", target_kind="user", target_id=name)
    _guarded(write, settings)


def _admin_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User).where(User.is_admin)) or 0)


def list_users(settings: Settings | None = None) -> list[UserInfo]:
    with session_scope(settings) as session:
        return [_info(u) for u in session.scalars(select(User).order_by(User.name))]


def get_user(name: str, settings: Settings | None = None) -> UserInfo | None:
    with session_scope(settings) as session:
        user = _find(session, name.strip())
        return _info(user) if user is not None else None


def _failures_in_window(session: Session, name: str,
                        settings: Settings) -> tuple[int, dt.datetime | None]:
    """Failed (or still being checked) attempts for ``name`` in the window, counted since
    its last success, and the oldest of them."""
    since = utcnow() - dt.timedelta(seconds=settings.login_window_seconds)
    last_ok = session.scalar(select(func.max(LoginAttempt.at)).where(
        LoginAttempt.name == name, LoginAttempt.success))
    if last_ok is not None and last_ok > since:
        since = last_ok
    row = session.execute(select(func.count(), func.min(LoginAttempt.at)).where(
        LoginAttempt.name == name, ~LoginAttempt.success, LoginAttempt.at > since)).one()
    return int(row[0]), row[1]


def recent_failures(name: str, settings: Settings | None = None) -> tuple[int, dt.datetime | None]:
    """Failed attempts for ``name`` in the window (since its last success) and the oldest one.

    Attempts whose password is still being checked count as failures (see ``authenticate``).
    """
    settings = settings or get_settings()
    with session_scope(settings) as session:
        return _failures_in_window(session, name, settings)


# Namespace of the per-name advisory locks on PostgreSQL (two-int form, so its keys never
# meet the one-bigint key of the migration lock in core.db.engine).
_PG_LOGIN_LOCK_SPACE = 727272


def _lock_name(session: Session, name: str) -> None:
    """Serialise sign-in reservations for one name until the transaction ends.

    SQLite needs nothing: write transactions start with ``BEGIN IMMEDIATE``, which already
    admits one writer at a time across threads and processes. On PostgreSQL (READ
    COMMITTED) two transactions could both count four failures and both insert a fifth, so
    a transaction-scoped advisory lock keyed on the name makes count-and-insert atomic.
    It also covers names without an account, which have no row to lock.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), "
                         "CAST(:key AS integer))"), {"space": _PG_LOGIN_LOCK_SPACE, "key": key})


@dataclass(frozen=True)
class _Reservation:
    attempt_id: int
    stored_hash: str | None
    is_admin: bool


def _reserve_attempt(name: str, settings: Settings) -> _Reservation:
    """Record the attempt as a failure *before* the password is checked, or refuse it.

    Counting, refusing and recording happen in one transaction under a per-name lock, so
    however many sign-ins for a name arrive at once, at most ``login_max_failures`` of them
    get a reservation (and so a password check) per window. The row is turned into a
    success only once the password is right; an attempt that dies half-way stays a failure.
    """
    def write(session: Session) -> _Reservation:
        _lock_name(session, name)
        failures, oldest = _failures_in_window(session, name, settings)
        if failures >= settings.login_max_failures:
            wait = settings.login_window_seconds
            if oldest is not None:
                wait = max(1, int(settings.login_window_seconds
                                  - (utcnow() - oldest).total_seconds()))
            raise LoginRefused(
                f"too many failed sign-in attempts for {name}; try again in {wait} s")
        attempt = LoginAttempt(name=name, success=False, at=utcnow())
        session.add(attempt)
        user = _find(session, name)
        session.flush()
        return _Reservation(attempt.id, user.password_hash if user is not None else None,
                            bool(user.is_admin) if user is not None else False)
    return run_write(write, settings)


def authenticate(name: str, password: str, settings: Settings | None = None) -> Identity:
    """Check a name and password; returns the identity or raises ``LoginRefused``."""
    settings = settings or get_settings()
    try:
        name = clean_name(name)
    except AccountError as exc:
        raise LoginRefused("wrong name or password") from exc
    reservation = _reserve_attempt(name, settings)
    # The slow Argon2 check runs outside any transaction: the reservation already counts.
    ok = verify_password(reservation.stored_hash, password or "")
    if not ok:
        raise LoginRefused("wrong name or password")
    stored_hash = reservation.stored_hash

    def write(session: Session) -> None:
        attempt = session.get(LoginAttempt, reservation.attempt_id)
        if attempt is not None:
            attempt.success = True
        if stored_hash and _hasher.check_needs_rehash(stored_hash):
            found = _find(session, name)
            if found is not None:
                found.password_hash = hash_password(password)
    run_write(write, settings)
    return Identity(name=name, is_admin=reservation.is_admin, auth_mode=AUTH_PASSWORD,
                    verified=True)


def oidc_identity(claims: dict[str, Any], settings: Settings | None = None) -> Identity:
    """The identity of a user signed in through the OIDC provider (``st.user``'s claims).

    The name is the e-mail address (else ``preferred_username``, else ``sub``); the admin
    role comes from a local account of that name (``python -m core user add EMAIL --admin
    --no-password``).
    """
    name = next((str(claims[key]) for key in ("email", "preferred_username", "sub")
                 if claims.get(key)), "")
    if not name:
        raise LoginRefused("the identity provider sent no e-mail, user name or subject")
    info = get_user(name, settings)
    return Identity(name=clean_name(name), is_admin=bool(info and info.is_admin),
                    auth_mode=AUTH_OIDC, verified=True)
