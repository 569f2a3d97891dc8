"""Alembic environment for the service's own tables.

Optuna shares the database and stamps the default `alembic_version` table, so ours is
`hpo_alembic_version`, and autogenerate only looks at tables named `hpo_*`.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from service.storage.db import make_engine
from service.storage.migrate import VERSION_TABLE, include_object
from service.storage.models import Base


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "HPO_DATABASE_URL", "sqlite:///./hpo.db"
    )
    engine = make_engine(url)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run them online")
run_migrations_online()
