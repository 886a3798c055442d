"""Database access: engines, sessions, migrations, and the foundation's ORM models."""

from core.db.engine import (dispose_engines, get_engine, init_db, run_write,  # noqa: F401
                            session_scope)
from core.db.models import (SOURCE_REAL, SOURCE_SYNTHETIC, SOURCES, Base, Dataset,  # noqa: F401
                            Image, ImageClass, Job, JobEvent, User, utcnow)
