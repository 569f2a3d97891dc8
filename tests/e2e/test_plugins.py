"""A user's plugin installed on a worker: the server accepts studies naming it, and only that
worker trains them."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    EXAMPLE_PLUGIN,
    ROOT,
    Processes,
    hpo_command,
    install_example_plugin,
    wait_for,
)

pytestmark = pytest.mark.e2e


def test_example_plugin_study_runs_on_the_worker_that_has_it(
    processes: Processes, tmp_path: Path
) -> None:
    site = install_example_plugin(tmp_path / "site")
    url = processes.server()
    submit = [*hpo_command("submit", str(EXAMPLE_PLUGIN / "study.yaml"), "--server", url)]
    refused = subprocess.run(submit, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 1 and "two_layer" in refused.stderr  # no worker has it yet
    pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    processes.worker("plain", url)
    with_plugin = processes.worker("with-plugin", url, PYTHONPATH=pythonpath)

    def registered() -> bool:
        workers = httpx.get(f"{url}/api/v1/workers", timeout=10).json()
        return len(workers) == 2

    wait_for(registered, 60, "both workers to register")
    done = subprocess.run(
        [*submit, "--wait"], capture_output=True, text=True, cwd=ROOT, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "study 'plugin-rings' completed" in done.stdout
    trials = httpx.get(f"{url}/api/v1/studies/1/trials", timeout=10).json()["items"]
    assert len(trials) == 6 and {t["state"] for t in trials} == {"completed"}
    assert {t["worker"] for t in trials} == {f"{socket.gethostname()}:{with_plugin.pid}/cpu"}
    assert "trial #0 of 'plugin-rings'" in processes.log("with-plugin")
    assert "plugin-rings" not in processes.log("plain")
