"""What a serving process does before it serves: its garbage collector's set-up
(`service.serve.settle_heap`), in one process and in each child of `--processes N`."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from service import serve


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, before and after."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _when_serving(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:
        seen["app"] = app
        seen["frozen"] = gc.get_freeze_count()
        seen["threshold"] = gc.get_threshold()

    monkeypatch.setattr(serve.uvicorn, "run", run)
    return seen


def test_one_process_serves_with_its_start_up_heap_frozen_and_young_objects_collected_late(
    monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    seen = _when_serving(monkeypatch)
    app = object()
    serve.serve(app, serve.Listen("127.0.0.1", 8000))  # type: ignore[arg-type]
    assert seen["app"] is app
    # every object of the imported libraries (FastAPI, SQLAlchemy, Optuna, pydantic...) is
    # out of the full collections' walk
    assert seen["frozen"] > 50_000
    assert seen["threshold"][0] == serve.GC_YOUNG_THRESHOLD == 10_000


def test_each_child_of_processes_settles_its_heap_once_its_app_is_built(
    monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    built: dict[str, Any] = {}

    def create_app(settings: Any, run_migrations: bool = True) -> object:
        built["frozen"] = gc.get_freeze_count()
        built["app"] = object()
        return built["app"]

    monkeypatch.setattr(serve, "create_app", create_app)
    monkeypatch.setattr(serve.logs, "configure", lambda *args: None)
    monkeypatch.setenv("HPO_DATABASE_URL", "postgresql+psycopg://hpo@127.0.0.1:1/none")
    app = serve.server_process_app()
    assert app is built["app"]
    assert built["frozen"] == 0  # the app's own objects are frozen too, so it came first
    assert gc.get_freeze_count() > 50_000
    assert gc.get_threshold()[0] == serve.GC_YOUNG_THRESHOLD
