"""initial hpo tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 15:21:05.454000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("optuna_study_id", sa.Integer(), nullable=True),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=False),
        sa.Column("parallel_trials", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_leased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hpo_studies_state"), ["state"], unique=False)

    op.create_table(
        "hpo_workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("capabilities", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "hpo_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hpo_events", schema=None) as batch_op:
        batch_op.create_index("ix_hpo_events_study_id_id", ["study_id", "id"], unique=False)

    op.create_table(
        "hpo_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.Text(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["hpo_workers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "number", name="uq_hpo_trials_study_number"),
    )
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hpo_trials_state_expiry", ["state", "lease_expires_at"], unique=False
        )
        batch_op.create_index("ix_hpo_trials_study_state", ["study_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_hpo_trials_worker_id"), ["worker_id"], unique=False)

    op.create_table(
        "hpo_trial_metrics",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["trial_id"], ["hpo_trials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "epoch"),
    )


def downgrade() -> None:
    op.drop_table("hpo_trial_metrics")
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_trials_worker_id"))
        batch_op.drop_index("ix_hpo_trials_study_state")
        batch_op.drop_index("ix_hpo_trials_state_expiry")

    op.drop_table("hpo_trials")
    with op.batch_alter_table("hpo_events", schema=None) as batch_op:
        batch_op.drop_index("ix_hpo_events_study_id_id")

    op.drop_table("hpo_events")
    op.drop_table("hpo_workers")
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_studies_state"))

    op.drop_table("hpo_studies")
