"""Articles indexed by (status, id) instead of status alone.

A batch claims the oldest articles waiting at its stage (``WHERE status = ? ORDER BY id
LIMIT n``). With the status index alone PostgreSQL walked the primary key from the first
article and filtered, passing every finished article of a 10,000-article catalog on each
claim; the pair serves the status filter and the order at once, and still every lookup by
status alone.

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
        batch.drop_index("ix_articles_status")
        batch.create_index("ix_articles_status_id", ["status", "id"])


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_index("ix_articles_status_id")
        batch.create_index("ix_articles_status", ["status"])
