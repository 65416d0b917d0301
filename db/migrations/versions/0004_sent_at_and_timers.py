"""Articles remember when their next message was sent; a table of farm-wide timers.

``sent_at`` lets the reaper find articles that wait for a message none was sent for (a
broker outage at submit, a worker killed between storing a stage and sending the next).
``timers`` gives each periodic job (the reaper) one turn per interval across all workers.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    # Articles already stored had their messages sent by the code that stored them.
    op.execute("UPDATE articles SET sent_at = updated_at")
    op.create_table(
        "timers",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("timers")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("sent_at")
