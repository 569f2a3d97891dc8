"""deploy/kubernetes: every overlay renders (`kubectl kustomize`), every object is valid against
the Kubernetes schemas (offline, `kubernetes-validate`), and the manifests keep the promises of
docs/kubernetes.md. Also what two server replicas need: migrations that take turns.

No cluster runs here: these tests check the manifests, not a running install.
"""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import create_engine, inspect

from tests.conftest import ROOT, hpo_command, postgres_database


@pytest.mark.e2e
def test_migrations_started_together_take_turns_and_all_succeed() -> None:
    """Server replicas and the migration init container start at the same moment on a fresh
    database. Without the advisory lock, 2 or 3 of 4 die with `duplicate key value violates
    unique constraint "pg_type_typname_nsp_index"` (seen here, while writing this)."""
    with postgres_database() as url:
        procs = [
            subprocess.Popen(
                hpo_command("db", "upgrade", "--database-url", url),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outputs
        assert all("is up to date" in out for out in outputs)
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"hpo_alembic_version", "alembic_version", "studies", "trials"} <= tables
        assert any(name.startswith("hpo_") and name != "hpo_alembic_version" for name in tables)
