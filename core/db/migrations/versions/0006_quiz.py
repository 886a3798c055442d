"""quiz (issue 7): rounds and answers

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quiz_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("player", sa.String(length=120), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=False),
        sa.Column("view_label", sa.String(length=300), nullable=False),
        sa.Column("pipelines", sa.JSON(), nullable=True),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=True),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("served_format", sa.String(length=8), nullable=False),
        sa.Column("served_px", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["class_id"], ["classes.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token"),
    )
    with op.batch_alter_table("quiz_rounds") as batch_op:
        batch_op.create_index("ix_quiz_rounds_player", ["player", "id"], unique=False)

    op.create_table(
        "quiz_round_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("is_real", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["quiz_rounds.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "position", name="uq_quiz_round_position"),
        sa.UniqueConstraint("token"),
    )
    with op.batch_alter_table("quiz_round_images") as batch_op:
        batch_op.create_index("ix_quiz_round_images_round_id", ["round_id"], unique=False)
        batch_op.create_index("ix_quiz_round_images_image_id", ["image_id"], unique=False)

    op.create_table(
        "quiz_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("player", sa.String(length=120), nullable=False),
        sa.Column("chosen_position", sa.Integer(), nullable=True),
        sa.Column("guess", sa.String(length=16), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("fooled", sa.Boolean(), nullable=True),
        sa.Column("seconds_to_answer", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["quiz_rounds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id"),
    )
    with op.batch_alter_table("quiz_answers") as batch_op:
        batch_op.create_index("ix_quiz_answers_player", ["player", "id"], unique=False)

    op.create_table(
        "quiz_judge_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("n_train_images", sa.Integer(), nullable=False),
        sa.Column("n_rounds", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    op.create_table(
        "quiz_judge_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("chosen_position", sa.Integer(), nullable=True),
        sa.Column("guess", sa.String(length=16), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("fooled", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["quiz_judge_runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["round_id"], ["quiz_rounds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "round_id", name="uq_quiz_judge_verdict"),
    )
    with op.batch_alter_table("quiz_judge_verdicts") as batch_op:
        batch_op.create_index("ix_quiz_judge_verdicts_run_id", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_table("quiz_judge_verdicts")
    op.drop_table("quiz_judge_runs")
    op.drop_table("quiz_answers")
    op.drop_table("quiz_round_images")
    op.drop_table("quiz_rounds")
