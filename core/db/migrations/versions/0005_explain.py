"""explainability (issue 6): attribution cache

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explain_attributions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("params_hash", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("true_label", sa.Integer(), nullable=True),
        sa.Column("predicted", sa.Integer(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content_box", sa.JSON(), nullable=True),
        sa.Column("margin_mass", sa.Float(), nullable=True),
        sa.Column("margin_area", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["training_runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "image_sha256", "method", "params_hash",
                            name="uq_explain_attributions_key"),
    )
    with op.batch_alter_table("explain_attributions") as batch_op:
        batch_op.create_index("ix_explain_attributions_run", ["run_id", "method", "source"], unique=False)
        batch_op.create_index("ix_explain_attributions_image_sha256", ["image_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("explain_attributions") as batch_op:
        batch_op.drop_index("ix_explain_attributions_image_sha256")
        batch_op.drop_index("ix_explain_attributions_run")
    op.drop_table("explain_attributions")
