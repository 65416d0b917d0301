"""Catalog names on batches; content hashes, requeue counts and attempt bases on articles.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("catalog", sa.String(255), nullable=False, server_default=""))
        batch.create_index("ix_batches_catalog", ["catalog"])
    with op.batch_alter_table("articles") as batch:
        batch.add_column(
            sa.Column("content_hash", sa.String(64), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("requeues", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("attempt_base", sa.Integer(), nullable=False, server_default="1")
        )


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("attempt_base")
        batch.drop_column("requeues")
        batch.drop_column("content_hash")
    with op.batch_alter_table("batches") as batch:
        batch.drop_index("ix_batches_catalog")
        batch.drop_column("catalog")
