"""Articles indexed by (status, id) instead of status alone.

"The oldest articles waiting at a stage" (a batch's mates) then reads only those articles,
in id order; with the status index alone PostgreSQL often walks the primary key past every
finished article instead.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.create_index("ix_articles_status_id", ["status", "id"])
        batch.drop_index("ix_articles_status")


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.create_index("ix_articles_status", ["status"])
        batch.drop_index("ix_articles_status_id")
