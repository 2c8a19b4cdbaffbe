"""keys record when they were last used; replays keep a delivery's attempt count

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apikey", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("schedule_from", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("schedule_from")
    with op.batch_alter_table("apikey", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
