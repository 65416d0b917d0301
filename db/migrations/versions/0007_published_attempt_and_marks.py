"""Articles remember their last claim, best attempt and last published attempt; marks.

``claimed_at`` is when the current lease was taken (the server's clock): a lease that ran
out is sent again once, and not again while the message sent after ``claimed_at`` waits.

``best_attempt`` is the render attempt the score stage stored as the article's best, and
``published_attempt`` the one whose picture and JSON were last written under the article's
own name: publishing reads the stored row, so a picture is published only once the store
took it, and the reaper publishes again whatever differs. ``marks`` keeps farm-wide values
the workers compare against (the broker's epoch, which changes when a broker comes back
empty).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("best_attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("published_attempt", sa.Integer(), nullable=True))
    op.create_table(
        "marks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("marks")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("published_attempt")
        batch.drop_column("best_attempt")
        batch.drop_column("claimed_at")
