"""Schemathesis against the app's own OpenAPI: every route, every check, with and without tokens.

Runs in-process over ASGI on SQLite with a bounded number of examples per route, on a database
seeded with a study whose trials are completed, failed, running and queued, so that ids 1.. name
real rows. Each mode asserts: no 5xx, every answer conforms to the documented schema, status
code, content type and headers, schema-violating requests are refused and valid ones accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, spec_doc

USER, WORKER = "user-token-for-fuzzing", "worker-token-for-fuzzing"


@dataclass(frozen=True)
class Mode:
    tokens: bool  # whether the server has tokens
    token: str | None  # the token the requests carry
    examples: int  # generated examples per route
    coverage: bool  # schemathesis' boundary-value phase as well


# Without tokens every route is reached in full; with them the same handlers sit behind the
# token check, so fewer examples show that it lets the user in and keeps the others out.
MODES = {
    "open": Mode(tokens=False, token=None, examples=10, coverage=True),
    "user-token": Mode(tokens=True, token=USER, examples=5, coverage=False),
    "worker-token": Mode(tokens=True, token=WORKER, examples=5, coverage=False),
    "no-token": Mode(tokens=True, token=None, examples=2, coverage=False),
}

# A spec, a budget or a table query can be valid by its JSON schema and still break a rule across
# fields or the study's state (a grid's point count, max_trials below the trials created, an
# unknown state in a filter): 422 naming the field.
BUSINESS_RULES = ["2xx", "401", "403", "404", "409", "422"]
BUSINESS_RULE_ROUTES = (
    ("/api/v1/studies", "POST"),
    ("/api/v1/studies/{study_id}", "PATCH"),
    ("/api/v1/dashboard/studies/{study_id}/trials", "GET"),  # its sort and filter grammar
)


def _config(mode: Mode) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 7,  # with derandomize: the same requests on every run
            "generation": {"max-examples": mode.examples},
            "phases": {"coverage": {"enabled": mode.coverage}},
            "operations": [
                {
                    "include-path": path,
                    "include-method": method,
                    "checks": {"positive_data_acceptance": {"expected-statuses": BUSINESS_RULES}},
                }
                for path, method in BUSINESS_RULE_ROUTES
            ],
        }
    )


def _seed(app: object) -> None:
    """Study 1 with trials in several states, worker 1 holding a running trial."""
    with TestClient(app, headers={"Authorization": f"Bearer {USER}"}) as http:
        doc = spec_doc("fuzz", budget={"max_trials": 4, "parallel_trials": 4, "epochs": 2})
        assert http.post("/api/v1/studies", json=doc).status_code == 201
        worker = ApiWorker(http, "w1")
        done, failed, _running = worker.lease(count=3)
        assert worker.run(done, [0.4, 0.7]).json()["state"] == "completed"
        assert worker.post(failed, "fail", reason="bad data").status_code == 200


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api_schema(mode: str, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    tokens = MODES[mode].tokens
    settings_ = Settings(
        database_url=f"sqlite:///{tmp_path / 'fuzz.db'}",
        artifacts_dir=tmp_path / "artifacts",
        api_token=USER if tokens else None,
        worker_token=WORKER if tokens else None,
    )
    app = create_app(settings_, reaper=False)
    _seed(app)
    # The schema itself is behind the user token when tokens are set.
    headers = {"Authorization": f"Bearer {USER}"} if tokens else {}
    yield schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=_config(MODES[mode]), headers=headers
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(
    derandomize=True,  # the same examples on every run: CI never flakes on a new draw
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_conforms_and_never_errors(case: schemathesis.Case, mode: str) -> None:
    token = MODES[mode].token
    headers = {"Authorization": f"Bearer {token}"} if token else None
    case.call_and_validate(headers=headers)
