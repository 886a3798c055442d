"""images: indexes that serve each gallery filter and sort, a count table and a prompt index,
both kept by triggers in the same transaction as every write to ``images``

Revision ID: 0011
Revises: 0010

* Indexes end with ``id`` after the equality columns, so "newest first" within a filter
  is read in index order (no temporary B-tree for the sort, LIMIT stops early).
* ``image_counts`` holds one row per (class, source, dataset, split, excluded) with the
  number of images; ``core.gallery.count`` sums it instead of counting images. Database
  triggers keep it, so every writer (ingest, generation, relabel, exclude, delete, repair,
  raw SQL) updates it in its own transaction and it can never drift.
* Prompt search: SQLite gets an FTS5 table with the trigram tokenizer (substring match,
  case-insensitive), kept by triggers; PostgreSQL a pg_trgm GIN index, which ``ILIKE``
  uses directly. Where either is unavailable the gallery falls back to a plain LIKE scan.
"""
from alembic import op
import sqlalchemy as sa

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_KEY = ("class_id", "source", "dataset_id", "split", "excluded")
NEW_INDEXES = {
    "ix_images_excluded_id": ["excluded", "id"],
    "ix_images_class_excluded_id": ["class_id", "excluded", "id"],
    "ix_images_class_source_split": ["class_id", "source", "split", "excluded", "id"],
    "ix_images_dataset_excluded_id": ["dataset_id", "excluded", "id"],
    "ix_images_dataset_class": ["dataset_id", "excluded", "class_id", "id"],
}
OLD_INDEXES = {
    "ix_images_class_id": ["class_id"],
    "ix_images_dataset_id": ["dataset_id", "id"],
    "ix_images_filter": ["excluded", "class_id", "source", "dataset_id", "split", "id"],
}

_SQLITE_MATCH_OLD = ("class_id = old.class_id AND source = old.source AND dataset_id = old.dataset_id "
                     "AND split = coalesce(old.split, '') AND excluded = old.excluded")


def _sqlite_count_sql(row: str) -> str:
    split = f"coalesce({row}.split, '')"
    return (f"INSERT INTO image_counts (class_id, source, dataset_id, split, excluded, n) "
            f"VALUES ({row}.class_id, {row}.source, {row}.dataset_id, {split}, {row}.excluded, 1) "
            f"ON CONFLICT (class_id, source, dataset_id, split, excluded) DO UPDATE SET n = n + 1;")


_SQLITE_UNCOUNT_OLD = (f"UPDATE image_counts SET n = n - 1 WHERE {_SQLITE_MATCH_OLD}; "
                       f"DELETE FROM image_counts WHERE {_SQLITE_MATCH_OLD} AND n <= 0;")
_SQLITE_CHANGED = " OR ".join(f"old.{c} IS NOT new.{c}" for c in _KEY)

SQLITE_TRIGGERS = {
    "images_counts_ai": f"AFTER INSERT ON images BEGIN {_sqlite_count_sql('new')} END",
    "images_counts_ad": f"AFTER DELETE ON images BEGIN {_SQLITE_UNCOUNT_OLD} END",
    "images_counts_au": (f"AFTER UPDATE OF {', '.join(_KEY)} ON images WHEN {_SQLITE_CHANGED} "
                         f"BEGIN {_SQLITE_UNCOUNT_OLD} {_sqlite_count_sql('new')} END"),
}
SQLITE_FTS_TRIGGERS = {
    "images_fts_ai": ("AFTER INSERT ON images WHEN new.prompt IS NOT NULL BEGIN "
                      "INSERT INTO images_prompt_fts (rowid, prompt) VALUES (new.id, new.prompt); END"),
    "images_fts_ad": ("AFTER DELETE ON images WHEN old.prompt IS NOT NULL BEGIN "
                      "INSERT INTO images_prompt_fts (images_prompt_fts, rowid, prompt) "
                      "VALUES ('delete', old.id, old.prompt); END"),
    "images_fts_au": ("AFTER UPDATE OF prompt, id ON images "
                      "WHEN old.prompt IS NOT new.prompt OR old.id IS NOT new.id BEGIN "
                      "INSERT INTO images_prompt_fts (images_prompt_fts, rowid, prompt) "
                      "SELECT 'delete', old.id, old.prompt WHERE old.prompt IS NOT NULL; "
                      "INSERT INTO images_prompt_fts (rowid, prompt) "
                      "SELECT new.id, new.prompt WHERE new.prompt IS NOT NULL; END"),
}

# PostgreSQL: statement-level triggers with transition tables, so a bulk INSERT of 10,000
# rows does one grouped upsert, not 10,000. (A trigger with transition tables may have only
# one event and no column list, hence three triggers on one function.)
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION image_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE image_counts AS c SET n = c.n - o.n
      FROM (SELECT class_id, source, dataset_id, coalesce(split, '') AS split, excluded,
                   count(*) AS n
              FROM old_rows GROUP BY 1, 2, 3, 4, 5) AS o
     WHERE c.class_id = o.class_id AND c.source = o.source AND c.dataset_id = o.dataset_id
       AND c.split = o.split AND c.excluded = o.excluded;
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    INSERT INTO image_counts AS c (class_id, source, dataset_id, split, excluded, n)
    SELECT class_id, source, dataset_id, coalesce(split, ''), excluded, count(*)
      FROM new_rows GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (class_id, source, dataset_id, split, excluded)
    DO UPDATE SET n = c.n + EXCLUDED.n;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM image_counts WHERE n <= 0;
  END IF;
  RETURN NULL;
END $$;
"""
PG_TRIGGERS = {
    "images_counts_ai": "AFTER INSERT ON images REFERENCING NEW TABLE AS new_rows",
    "images_counts_ad": "AFTER DELETE ON images REFERENCING OLD TABLE AS old_rows",
    "images_counts_au": "AFTER UPDATE ON images REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
}


def _fill_counts() -> None:
    op.execute("INSERT INTO image_counts (class_id, source, dataset_id, split, excluded, n) "
               "SELECT class_id, source, dataset_id, coalesce(split, ''), excluded, count(*) "
               "FROM images GROUP BY class_id, source, dataset_id, coalesce(split, ''), excluded")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Plain (not batch) index operations: a SQLite table rebuild would drop the triggers.
    for name in OLD_INDEXES:
        op.drop_index(name, table_name="images")
    for name, columns in NEW_INDEXES.items():
        op.create_index(name, "images", columns, unique=False)
    op.create_table(
        "image_counts",
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        # '' for images without a split, so the key has no NULL (NULLs never conflict).
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, name="pk_image_counts"),
    )
    _fill_counts()
    if dialect == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        if _sqlite_has_trigram():
            op.execute("CREATE VIRTUAL TABLE images_prompt_fts USING fts5("
                       "prompt, content='images', content_rowid='id', tokenize='trigram')")
            op.execute("INSERT INTO images_prompt_fts (rowid, prompt) "
                       "SELECT id, prompt FROM images WHERE prompt IS NOT NULL")
            for name, body in SQLITE_FTS_TRIGGERS.items():
                op.execute(f"CREATE TRIGGER {name} {body}")
        op.execute("ANALYZE")
    elif dialect == "postgresql":
        op.execute(PG_FUNCTION)
        for name, spec in PG_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {spec} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION image_counts_apply()")
        bind = op.get_bind()
        try:
            # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it.
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError:
            pass  # no pg_trgm on this server: prompt search scans (still correct)
        else:
            op.execute("CREATE INDEX ix_images_prompt_trgm ON images "
                       "USING gin (prompt gin_trgm_ops)")
        op.execute("ANALYZE images")


def _sqlite_has_trigram() -> bool:
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE VIRTUAL TABLE temp.probe_trigram USING fts5("
                                 "x, tokenize='trigram')")
            bind.exec_driver_sql("DROP TABLE temp.probe_trigram")
    except sa.exc.DBAPIError:
        return False
    return True


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in (*SQLITE_FTS_TRIGGERS, *SQLITE_TRIGGERS):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS images_prompt_fts")
    elif dialect == "postgresql":
        for name in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON images")
        op.execute("DROP FUNCTION IF EXISTS image_counts_apply()")
        op.execute("DROP INDEX IF EXISTS ix_images_prompt_trgm")
    op.drop_table("image_counts")
    for name in NEW_INDEXES:
        op.drop_index(name, table_name="images")
    for name, columns in OLD_INDEXES.items():
        op.create_index(name, "images", columns, unique=False)
