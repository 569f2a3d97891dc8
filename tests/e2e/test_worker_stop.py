"""End to end: a worker told to stop while its server is gone leaves within seconds instead of
waiting out its retry window (a minute by default) on a report that cannot arrive."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Processes, spec_doc, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("slots", ["1", "2"])
def test_a_worker_stopped_after_its_server_died_exits_promptly(
    processes: Processes, slots: str
) -> None:
    url = processes.server()
    # Short epochs (spec_doc's small synthetic MLP), many of them: whatever the machine's load,
    # the worker is soon waiting on a report when the server goes, not inside a long epoch.
    doc = spec_doc("orphan", budget={"max_trials": 2, "parallel_trials": 2, "epochs": 1000})
    reply = httpx.post(f"{url}/api/v1/studies", json=doc, timeout=30)
    study_id = reply.json()["id"]
    worker = processes.start(
        "worker", "worker", "--server", url, "--devices", "cpu", "--slots", slots
    )

    def training() -> list[dict[str, Any]] | None:
        page = httpx.get(f"{url}/api/v1/studies/{study_id}/trials", timeout=30).json()
        running = [t for t in page["items"] if t["state"] == "running" and t["epochs"] >= 1]
        # Every slot trains: one slot trains both trials as one fused group (--fuse auto).
        return running if len(running) >= int(slots) else None

    wait_for(training, 120, "training under way", every=0.2)
    server = processes.process("server")
    server.kill()
    server.wait()
    time.sleep(3)  # the next epoch's report is retrying against the dead server by now
    assert worker.poll() is None  # still trying: its retry window is 60 s
    worker.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code = worker.wait(50)
    took = time.monotonic() - stopped
    log = processes.log("worker")
    # About 6 s: the retrying report gives up (3 s), then failing the trial does (3 s).
    assert took < 20, f"{took:.1f} s to stop\n{log}"
    assert code == 1, log  # the server never answered: not a clean stop
    assert "cannot reach the hpo server" in log, log
