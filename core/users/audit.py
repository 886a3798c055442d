"""The audit log: who relabelled, deleted, cancelled or changed users, and when.

Call ``record`` inside the same write session as the change itself, so the entry and the
change are committed together (or neither is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.engine import run_write, session_scope
from core.users.identity import ANONYMOUS
from core.users.models import AuditEntry


def record(session: Session, actor: str | None, action: str, *, target_kind: str | None = None,
           target_id: Any = None, detail: dict[str, Any] | None = None) -> AuditEntry:
    """Add an audit entry to ``session`` (the caller's transaction commits it)."""
    entry = AuditEntry(actor=(actor or ANONYMOUS)[:120], action=action[:40],
                       target_kind=target_kind,
                       target_id=None if target_id is None else str(target_id)[:120],
                       detail=detail)
    session.add(entry)
    return entry


def record_now(actor: str | None, action: str, *, target_kind: str | None = None,
               target_id: Any = None, detail: dict[str, Any] | None = None,
               settings: Settings | None = None) -> None:
    """Record in a transaction of its own (for actions that have no session at hand)."""
    run_write(lambda s: record(s, actor, action, target_kind=target_kind, target_id=target_id,
                               detail=detail) and None, settings)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: Any
    actor: str
    action: str
    target_kind: str | None
    target_id: str | None
    detail: dict[str, Any] | None


def entries(*, actor: str | None = None, action: str | None = None, limit: int = 200,
            settings: Settings | None = None) -> list[AuditRow]:
    """Newest entries first."""
    with session_scope(settings) as session:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if actor:
            query = query.where(AuditEntry.actor == actor)
        if action:
            query = query.where(AuditEntry.action == action)
        return [AuditRow(e.id, e.at, e.actor, e.action, e.target_kind, e.target_id, e.detail)
                for e in session.scalars(query)]
