"""tenant copy policy: banned terms, allowed domains and handles

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("banned_terms", "allow_domains", "allow_handles")


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(
                sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
            )


def downgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.drop_column(name)
