"""Articles and renders record the commits of the models that made them.

``articles.model_commits`` holds the text models' (``translator``, ``extractor``) and
``renders.model_commits`` the image models' (``renderer``, ``lora``, ``scorer``): each role
→ ``{"repo": ..., "commit": ...}`` as the worker that ran the stage loaded it, so that an
article's published JSON names the weights of every stage, whichever worker ran it. Rows
made before have none (NULL).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("model_commits", sa.JSON(), nullable=True))
    with op.batch_alter_table("renders") as batch:
        batch.add_column(sa.Column("model_commits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("renders") as batch:
        batch.drop_column("model_commits")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("model_commits")
