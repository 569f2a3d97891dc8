"""Workers elsewhere need only the server's URL and the worker token: a server on a
non-default address with PostgreSQL and tokens, and workers that know nothing else."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Processes, postgres_database, spec_doc, wait_for

pytestmark = pytest.mark.e2e

USER, WORKER = "user-token-for-the-team", "worker-token-for-the-gpu-boxes"
ADDRESS = "127.0.0.7"  # not the default 127.0.0.1: workers reach it only by the URL given


def test_workers_with_only_url_and_worker_token_run_a_study(processes: Processes) -> None:
    with postgres_database() as database_url:
        url = processes.server(
            host=ADDRESS, HPO_DATABASE_URL=database_url, HPO_API_TOKEN=USER, HPO_WORKER_TOKEN=WORKER
        )
        # A worker's whole configuration: the URL and the worker token. No database URL.
        bare = {"HPO_DATABASE_URL": "", "HPO_API_TOKEN": "", "HPO_ARTIFACTS_DIR": "/nonexistent"}
        for name in ("box-a", "box-b"):
            processes.worker(name, url, "--token", WORKER, **bare)
        user = {"Authorization": f"Bearer {USER}"}
        doc = spec_doc("remote", budget={"max_trials": 6, "parallel_trials": 2, "epochs": 2})
        study = httpx.post(f"{url}/api/v1/studies", json=doc, headers=user, timeout=30).json()

        def finished() -> bool:
            view = httpx.get(f"{url}/api/v1/studies/{study['id']}", headers=user).json()
            return view["state"] == "completed"

        wait_for(finished, 180, "the study to complete")
        trials = httpx.get(f"{url}/api/v1/studies/{study['id']}/trials", headers=user).json()
        assert {t["state"] for t in trials["items"]} == {"completed"}
        assert len({t["worker"] for t in trials["items"]}) == 2  # both boxes trained
        assert httpx.get(f"{url}/api/v1/studies", timeout=10).status_code == 401
        for name in ("box-a", "box-b"):
            assert WORKER not in processes.log(name) and USER not in processes.log(name)
