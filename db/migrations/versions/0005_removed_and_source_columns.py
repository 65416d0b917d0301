"""Articles keep their source cells, and are marked when their row left the catalog.

``removed_at`` is set when a re-import no longer finds an article's row: it leaves the
batch's counts and exports but keeps its results, and comes back if its row returns.
``source_columns`` holds the cells the farm read, under the catalog's own headers, so an
export carries them beside the results.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("source_columns", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("source_columns")
        batch.drop_column("removed_at")
