"""Fixtures shared by the suite: an app on a temporary database, and real processes."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.support.databases import scratch_postgres

# The process scaffolding lives in tests/support (shared with bench/); its names stay importable
# from here for the tests that take them from tests.conftest.
from tests.support.processes import (  # noqa: F401
    Processes,
    free_port,
    healthy,
    hpo_command,
)
from tests.support.waiting import wait_for  # noqa: F401

# The processes the tests start see a terminal's Ctrl-C, as a user's do. A suite run as a
# background job (`cmd &` in a non-interactive shell, as a CI script may be) starts with SIGINT
# ignored, which every child would inherit: `hpo demo --keep` then never hears the Ctrl-C its
# test presses. A handler (unlike "ignored") is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent


def spec_doc(name: str = "s1", **overrides: Any) -> dict[str, Any]:
    """A small valid spec; top-level sections in `overrides` replace the defaults."""
    doc: dict[str, Any] = {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": 4, "parallel_trials": 2, "epochs": 3},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "norm": {"type": "categorical", "choices": ["none", "batch", "layer"]},
        },
        "workload": {"model": "mlp", "dataset": "synthetic"},
    }
    doc.update(overrides)
    return doc


# An admin URL of a PostgreSQL server (e.g. postgresql+psycopg://hpo:hpo@127.0.0.1/postgres):
# the storage and API suite then also runs against PostgreSQL, one fresh database per test.
POSTGRES_ADMIN_URL = os.environ.get("HPO_TEST_POSTGRES_URL")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    if not POSTGRES_ADMIN_URL:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail("HPO_REQUIRE_POSTGRES is set but HPO_TEST_POSTGRES_URL is not")
        pytest.skip("set HPO_TEST_POSTGRES_URL to run the suite against PostgreSQL too")
    with scratch_postgres(POSTGRES_ADMIN_URL) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpo.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, artifacts_dir=tmp_path / "a")


USER_TOKEN, WORKER_TOKEN = "user-secret-token", "worker-secret-token"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    """An app on SQLite with both tokens set (USER_TOKEN, WORKER_TOKEN)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hpo.db'}",
        artifacts_dir=tmp_path / "a",
        api_token=USER_TOKEN,
        worker_token=WORKER_TOKEN,
    )
    with TestClient(create_app(settings, reaper=False)) as client:
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, reaper=False)
    with TestClient(app) as c:
        yield c


class ApiWorker:
    """A protocol client over a TestClient or a real server: the worker's side, by hand."""

    def __init__(self, http: Any, name: str = "w", **capabilities: list[str]) -> None:
        self.http = http
        body = {"name": name, "capabilities": capabilities}
        reply = http.post("/api/v1/workers/register", json=body)
        assert reply.status_code == 201, reply.text
        self.id = reply.json()["worker_id"]

    def lease(self, count: int = 1) -> list[dict[str, Any]]:
        reply = self.http.post(f"/api/v1/workers/{self.id}/lease", json={"count": count})
        assert reply.status_code == 200, reply.text
        assignments: list[dict[str, Any]] = reply.json()["assignments"]
        return assignments

    def post(self, trial: dict[str, Any], action: str, **body: Any) -> Any:
        body = {"token": trial["token"], **body}
        return self.http.post(
            f"/api/v1/workers/{self.id}/trials/{trial['trial_id']}/{action}",
            content=json.dumps(body),  # json.dumps keeps NaN; httpx's encoder refuses it
            headers={"content-type": "application/json"},
        )

    def report(self, trial: dict[str, Any], epoch: int, **metrics: float) -> Any:
        return self.post(trial, "report", epoch=epoch, metrics=metrics)

    def run(self, trial: dict[str, Any], values: list[float]) -> Any:
        """Report `values` as val_accuracy for epochs 1.., then complete."""
        for epoch, value in enumerate(values, start=1):
            reply = self.report(trial, epoch, val_accuracy=value, val_loss=1 - value)
            assert reply.status_code == 200, reply.text
        return self.post(trial, "complete")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real `hpo` processes on a SQLite file in tmp_path, stopped at teardown."""
    with Processes(tmp_path) as procs:
        yield procs


EXAMPLE_PLUGIN = ROOT / "examples" / "plugin"


def install_example_plugin(site: Path) -> Path:
    """Make examples/plugin importable and discoverable from `site` as pip would: the module
    plus a .dist-info folder with its entry points (read from the example's pyproject)."""
    import shutil

    import tomllib

    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_PLUGIN / "hpo_example_plugin.py", site)
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    info = site / f"hpo_example_plugin-{project['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def in_threads(n: int, target: Any, timeout: float = 300) -> list[BaseException]:
    """Run target(0..n-1) in n threads that start together; returns what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # collected and asserted by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
