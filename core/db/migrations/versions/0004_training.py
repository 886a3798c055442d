"""training (issue 5): experiment runs and metrics

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("mode", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("group_kind", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("curves", sa.JSON(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_runs") as batch_op:
        batch_op.create_index("ix_training_runs_job_id", ["job_id"], unique=False)
        batch_op.create_index("ix_training_runs_status", ["status"], unique=False)
        batch_op.create_index("ix_training_runs_group", ["group_id", "id"], unique=False)

    op.create_table(
        "training_run_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=60), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["training_runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_run_images") as batch_op:
        batch_op.create_index("ix_training_run_images_role", ["run_id", "role"], unique=False)
        batch_op.create_index("ix_training_run_images_image_id", ["image_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("training_run_images") as batch_op:
        batch_op.drop_index("ix_training_run_images_image_id")
        batch_op.drop_index("ix_training_run_images_role")
    op.drop_table("training_run_images")
    with op.batch_alter_table("training_runs") as batch_op:
        batch_op.drop_index("ix_training_runs_group")
        batch_op.drop_index("ix_training_runs_status")
        batch_op.drop_index("ix_training_runs_job_id")
    op.drop_table("training_runs")
