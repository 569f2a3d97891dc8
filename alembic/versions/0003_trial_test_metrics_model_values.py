"""trial test metrics, kept model and objective values

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:00:00

- `test_metrics`: the held-out test split's metrics of a finished trial (never used for selection),
  or why there are none (issue 13).
- `model_id`: the artifact id of the trial's kept final model (issue 16, the tuned model).
- `values`: one value per objective for multi-objective studies (issue 16); `value` stays the
  single objective's value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_metrics", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("model_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("values", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_column("values")
        batch_op.drop_column("model_id")
        batch_op.drop_column("test_metrics")
