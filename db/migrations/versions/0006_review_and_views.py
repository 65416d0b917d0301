"""Review studio users and actions, review status beside farm status, and views per row.

An article is now one catalog row in one view (front, back, detail, ...), so the unique key
of an article within its batch gains the view; existing articles are the front view.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("views", sa.JSON(), nullable=True))
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("view", sa.String(16), nullable=False, server_default="front"))
        batch.add_column(sa.Column("review_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(80), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_article_batch_key", type_="unique")
        batch.create_unique_constraint("uq_article_batch_key_view", ["batch_id", "key", "view"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "review_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("article_id", sa.Integer(), sa.ForeignKey("articles.id"), nullable=False),
        sa.Column("user", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_actions_batch_id", "review_actions", ["batch_id"])
    op.create_index("ix_review_actions_article_id", "review_actions", ["article_id"])


def downgrade() -> None:
    op.drop_index("ix_review_actions_article_id", "review_actions")
    op.drop_index("ix_review_actions_batch_id", "review_actions")
    op.drop_table("review_actions")
    op.drop_table("users")
    # Before this revision an article has no view: the other views' articles go, with their
    # renders and stage runs, or the old unique key (batch, key) would not hold.
    others = "SELECT id FROM articles WHERE view <> 'front'"
    op.execute(f"DELETE FROM renders WHERE article_id IN ({others})")
    op.execute(f"DELETE FROM stage_runs WHERE article_id IN ({others})")
    op.execute("DELETE FROM articles WHERE view <> 'front'")
    with op.batch_alter_table("articles") as batch:
        batch.drop_constraint("uq_article_batch_key_view", type_="unique")
        batch.create_unique_constraint("uq_article_batch_key", ["batch_id", "key"])
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("review_status")
        batch.drop_column("view")
    # A plain ALTER TABLE (SQLite has one since 3.35): copying the table, as batch mode does,
    # would trip the foreign keys of the articles that point at it.
    op.drop_column("batches", "views")
