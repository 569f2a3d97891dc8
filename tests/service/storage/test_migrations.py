"""The service's migrations: on an empty database and beside Optuna's tables; reversible; and
in step with the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from service.storage import migrate
from service.storage.db import make_engine, open_optuna_storage
from service.storage.models import Base

HPO_TABLES = {"hpo_studies", "hpo_trials", "hpo_trial_metrics", "hpo_workers", "hpo_events"}


def _head(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _hpo_version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if "hpo_alembic_version" not in _tables(engine):
            return None
        return conn.execute(text("SELECT version_num FROM hpo_alembic_version")).scalar()


def test_upgrade_downgrade_upgrade_on_an_empty_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    migrate.upgrade(engine)
    assert _tables(engine) >= HPO_TABLES
    assert _hpo_version(engine) == _head(engine)
    migrate.downgrade(engine, "0001")
    assert "rung" not in {c["name"] for c in inspect(engine).get_columns("hpo_trials")}
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert not (HPO_TABLES & _tables(engine))
    migrate.upgrade(engine)
    assert _tables(engine) >= HPO_TABLES
    migrate.upgrade(engine)  # idempotent: every server start runs it


def test_upgrade_beside_optuna_leaves_optuna_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_optuna_storage(url)
    study_id = storage.create_new_study([], study_name="theirs")
    engine = make_engine(url)
    with engine.connect() as conn:
        optuna_version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    migrate.upgrade(engine)
    assert _tables(engine) >= HPO_TABLES
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            optuna_version
        )
    assert storage.get_study_name_from_id(study_id) == "theirs"
    assert _hpo_version(engine) == _head(engine)


def test_models_and_migrations_agree(database_url: str) -> None:
    """On SQLite and on PostgreSQL: autogenerate finds nothing to add after the migrations."""
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            opts = {"include_object": migrate.include_object}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
