"""Run the service's Alembic migrations from code (`hpo server`, `hpo db upgrade`, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

VERSION_TABLE = "hpo_alembic_version"  # Optuna stamps the default `alembic_version`


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate and comparisons look at the service's own `hpo_*` tables only."""
    if type_ == "table":
        return bool(name) and str(name).startswith("hpo_") and name != VERSION_TABLE
    return True


def _script_location() -> Path:
    """The migrations folder: installed, the top-level alembic/ ships as `service/migrations`;
    in a source checkout (editable install) it is the top-level alembic/ itself."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "migrations"
    if (installed / "env.py").exists():
        return installed
    return package.parent / "alembic"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the hpo_* tables to `revision`; safe to call on every start (no-op when current)."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)
