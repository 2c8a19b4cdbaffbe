"""the fetch stage: a job's fetch attempts; URL jobs waiting for a GPU move to fetching

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

A URL job queued before this revision has a caption message waiting, but a GPU worker
no longer fetches: it becomes ``fetching`` with its lease already lapsed, so the reaper
publishes its fetch task at its next pass (its stale caption message claims nothing).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fetch_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    job = sa.table(
        "job",
        sa.column("status", sa.String),
        sa.column("image_sha256", sa.String),
        sa.column("image_url", sa.Text),
        sa.column("lease_expires_at", sa.DateTime),
    )
    op.execute(
        job.update()
        .where(
            job.c.status == "queued",
            job.c.image_sha256.is_(None),
            job.c.image_url.is_not(None),
        )
        .values(status="fetching", lease_expires_at=sa.func.current_timestamp())
    )


def downgrade() -> None:
    job = sa.table(
        "job", sa.column("status", sa.String), sa.column("lease_expires_at", sa.DateTime)
    )
    op.execute(
        job.update()
        .where(job.c.status == "fetching")
        .values(status="received", lease_expires_at=None)
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("fetch_attempts")
