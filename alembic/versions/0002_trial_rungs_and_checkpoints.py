"""trial rungs and checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:43:38.986818
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bracket", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rung", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("target_epochs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("checkpoint_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("checkpoint_epoch", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_epoch")
        batch_op.drop_column("checkpoint_id")
        batch_op.drop_column("target_epochs")
        batch_op.drop_column("rung")
        batch_op.drop_column("bracket")
