"""Review actions keep the reviewer's words and the attempt they were about.

``review_actions.comment`` holds why a picture was rejected (or any note given with an
action), ``review_actions.attempt`` the render attempt the action judged, or the first
attempt it started (an edit, a requeue): the article page tells a rejected attempt from one
made for earlier text by it. Rows made before have neither (NULL).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_actions") as batch:
        batch.add_column(sa.Column("comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_actions") as batch:
        batch.drop_column("attempt")
        batch.drop_column("comment")
