"""Alembic environment: runs on the connection handed in by ``db.engine.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from db.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # Run from the alembic CLI: `alembic -x url=postgresql://... upgrade head`.
    url = context.get_x_argument(as_dictionary=True)["url"]
    with create_engine(url).begin() as cli_connection:
        context.configure(connection=cli_connection, target_metadata=Base.metadata)
        context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
