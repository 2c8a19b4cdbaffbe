"""tenant webhook secret encrypted at rest

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Existing plaintext secrets (``whsec_...``) are encrypted with WEBHOOK_SECRETS_KEY (or
the one-host development key file), the key the running services will use.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from schemas.settings import CoreSettings
    from schemas.store.secrets import encrypt

    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret_encrypted", sa.Text(), nullable=True))
    tenant = sa.table(
        "tenant",
        sa.column("id", sa.String),
        sa.column("webhook_secret", sa.String),
        sa.column("webhook_secret_encrypted", sa.Text),
    )
    connection = op.get_bind()
    key = CoreSettings().webhook_secrets_key
    for row in connection.execute(sa.select(tenant.c.id, tenant.c.webhook_secret)).all():
        connection.execute(
            tenant.update()
            .where(tenant.c.id == row.id)
            .values(webhook_secret_encrypted=encrypt(row.webhook_secret, key=key))
        )
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.alter_column("webhook_secret_encrypted", nullable=False)
        batch_op.drop_column("webhook_secret")


def downgrade() -> None:
    raise NotImplementedError("secrets are not decrypted back into plaintext")
