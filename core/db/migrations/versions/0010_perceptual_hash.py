"""images: a 64-bit perceptual hash and a colour signature, for near-duplicate detection

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep NULL: hashing needs the image files, which a migration should not
    # read; ``python -m core rehash`` (or the first experiment split) fills them in.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phash", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("colour_sig", sa.String(length=24), nullable=True))
        batch_op.create_index("ix_images_phash", ["phash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_phash")
        batch_op.drop_column("colour_sig")
        batch_op.drop_column("phash")
