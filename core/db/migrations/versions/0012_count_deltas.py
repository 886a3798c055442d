"""image_counts on PostgreSQL: each transaction gathers its count changes in rows of its
own and applies them at commit in key order, so concurrent writers cannot deadlock

Revision ID: 0012
Revises: 0011

Migration 0011's statement triggers upserted the shared ``image_counts`` rows as each
statement ran, and held those row locks until commit. Two transactions writing the same
(class, source, dataset, split, excluded) keys in different orders then waited for each
other: an import inserts its batch row by row (psycopg's executemany sends one INSERT per
row, so the statement trigger fires per row), and a relabel or delete moves rows between
keys while it runs. PostgreSQL broke the cycle by killing one with "deadlock detected".

Now the statement triggers only add signed deltas to ``image_count_deltas``, keyed by the
writing transaction (rows no other transaction touches, so nothing waits), and a deferred
constraint trigger folds them into ``image_counts`` at commit: one upsert in key order.
Every transaction takes the shared count rows in that one order, and only for the moment
of its commit, so no two can hold each other's. Totals stay exact: the fold commits or
rolls back with the writes (a rolled-back savepoint drops its deltas and its queued fold).
A transaction reading the counts before its own commit sees them without its own writes.

SQLite is unchanged: its per-row triggers run inside a writer that holds the database's
one write lock (``BEGIN IMMEDIATE``), so writers never interleave.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_KEY = "class_id, source, dataset_id, split, excluded"


def _grouped(*tables: str) -> str:
    """This transaction's id, each key and its net change in ``tables`` (``new_rows`` +1,
    ``old_rows`` -1): a change that leaves a key's count as it was (an edit of the prompt,
    say) writes nothing."""
    parts = " UNION ALL ".join(
        f"SELECT class_id, source, dataset_id, coalesce(split, '') AS split, excluded, "
        f"{'1' if table == 'new_rows' else '-1'} AS n FROM {table}" for table in tables)
    return (f"SELECT txid_current(), {_KEY}, sum(n) FROM ({parts}) AS changed "
            f"GROUP BY {_KEY} HAVING sum(n) <> 0")


def _add_deltas(select_sql: str) -> str:
    return (f"INSERT INTO image_count_deltas AS d (xact, {_KEY}, n) {select_sql} "
            f"ON CONFLICT (xact, {_KEY}) DO UPDATE SET n = d.n + EXCLUDED.n;")


# The three statement triggers of 0011 keep calling this function by name.
PG_APPLY = f"""
CREATE OR REPLACE FUNCTION image_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_add_deltas(_grouped('new_rows'))}
  ELSIF TG_OP = 'DELETE' THEN
    {_add_deltas(_grouped('old_rows'))}
  ELSE
    {_add_deltas(_grouped('new_rows', 'old_rows'))}
  END IF;
  RETURN NULL;
END $$;
"""

# Fired once per delta row at commit; the first call folds all of the transaction's deltas
# (and deletes them), the later ones find none.
PG_FOLD = f"""
CREATE OR REPLACE FUNCTION image_counts_fold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  emptied boolean;
BEGIN
  WITH mine AS (
    DELETE FROM image_count_deltas WHERE xact = txid_current()
    RETURNING {_KEY}, n),
  applied AS (
    INSERT INTO image_counts AS c ({_KEY}, n)
    SELECT {_KEY}, sum(n) FROM mine GROUP BY {_KEY} HAVING sum(n) <> 0
    -- One order for every transaction: no two can each hold a row the other waits for.
    ORDER BY {_KEY}
    ON CONFLICT ({_KEY}) DO UPDATE SET n = c.n + EXCLUDED.n
    RETURNING c.n)
  SELECT bool_or(n <= 0) INTO emptied FROM applied;
  IF emptied THEN
    -- Only rows this fold just emptied can match, and it holds their locks already.
    DELETE FROM image_counts WHERE n <= 0;
  END IF;
  RETURN NULL;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_table(
        "image_count_deltas",
        # The writing transaction (txid_current()): its rows are its own.
        sa.Column("xact", sa.BigInteger(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("xact", "class_id", "source", "dataset_id", "split", "excluded",
                                name="pk_image_count_deltas"),
    )
    op.execute(PG_APPLY)
    op.execute(PG_FOLD)
    op.execute("CREATE CONSTRAINT TRIGGER image_counts_fold AFTER INSERT ON image_count_deltas "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION image_counts_fold()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS image_counts_fold ON image_count_deltas")
    op.execute("DROP FUNCTION IF EXISTS image_counts_fold()")
    op.execute(_previous().PG_FUNCTION)
    op.drop_table("image_count_deltas")


def _previous():  # noqa: ANN202 - the 0011 module
    path = Path(__file__).with_name("0011_gallery_speed.py")
    spec = importlib.util.spec_from_file_location("synthlab_migration_0011", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
