"""The README's first command: `hpo demo` runs a real study end to end on local SQLite."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Processes, healthy, hpo_command, spec_doc, wait_for

pytestmark = pytest.mark.e2e


# 20 trials: about a minute on an idle machine, over 280 s on 2 cores at load 12. The limits
# only catch a hang; how fast the demo runs is no test's business.
@pytest.mark.timeout(900)
def test_hpo_demo_finishes_and_prints_the_best_trial_and_page(tmp_path: Path) -> None:
    result = subprocess.run(
        hpo_command("demo"), capture_output=True, text=True, timeout=840, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "20/20 trials done" in out
    assert "completed" in out
    assert "best trial #" in out and "val_accuracy=" in out
    assert "the page: http://127.0.0.1:" in out
    assert (tmp_path / "hpo-demo.db").exists()  # the results stay for `hpo server` to show
    assert "Traceback" not in result.stderr


def test_hpo_demo_keep_serves_the_results_until_ctrl_c(
    processes: Processes, tmp_path: Path
) -> None:
    spec = tmp_path / "small.yaml"
    budget = {"max_trials": 2, "parallel_trials": 1, "epochs": 2}
    spec.write_text(yaml.safe_dump(spec_doc("small", budget=budget)))
    argv = hpo_command("demo", "--spec", str(spec), "--keep")
    demo = processes.spawn("demo", argv, processes.env, cwd=tmp_path)
    page = r"the page: (http://127\.0\.0\.1:\d+)/#/studies/(\d+)"
    found = wait_for(lambda: re.search(page, processes.log("demo")), 180, "the demo's study")
    url, study_id = found.group(1), found.group(2)
    wait_for(lambda: "serving until Ctrl-C" in processes.log("demo"), 10, "--keep to serve on")
    # One worker command with a slot per core (one or more on any machine); the spec's
    # parallel_trials (1) is kept, since --spec is the user's.
    slots = re.search(
        r"the worker started (\d+) slots? \(one torch thread each\): 1 trial at",
        processes.log("demo"),
    )
    assert slots, processes.log("demo")
    workers = httpx.get(f"{url}/api/v1/workers", timeout=10).json()
    assert len(workers) == int(slots.group(1))
    assert {w["slots"] for w in workers} == {int(slots.group(1))}
    # The study is over and the demo still serves it: the API and the page answer.
    assert demo.poll() is None
    study = httpx.get(f"{url}/api/v1/studies/{study_id}", timeout=10).json()
    assert study["state"] == "completed" and study["counts"]["completed"] == 2
    assert httpx.get(f"{url}/", timeout=10).status_code == 200
    demo.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        code = demo.wait(60)
    except subprocess.TimeoutExpired:  # one CI run saw this: show what the demo was doing
        pytest.fail(f"the demo still runs 60 s after Ctrl-C; its output:\n{processes.log('demo')}")
    assert code == 130, processes.log("demo")
    assert not healthy(url)  # its server went with it
    assert (tmp_path / "hpo-demo.db").exists()
    assert "Traceback" not in processes.log("demo")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an exited child not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_hpo_demo_stopped_by_sigterm_stops_its_server_and_worker(
    processes: Processes, tmp_path: Path
) -> None:
    """A `kill` (SIGTERM) of `hpo demo --keep` ends its server and worker command with it, as
    Ctrl-C does: by default the signal ended the demo alone, and the worker went on retrying a
    server that was gone."""
    spec = tmp_path / "small.yaml"
    budget = {"max_trials": 1, "parallel_trials": 1, "epochs": 1}
    spec.write_text(yaml.safe_dump(spec_doc("small", budget=budget)))
    argv = hpo_command("demo", "--spec", str(spec), "--keep")
    demo = processes.spawn("demo", argv, processes.env, cwd=tmp_path)
    wait_for(lambda: "serving until Ctrl-C" in processes.log("demo"), 180, "--keep to serve on")
    url = re.search(r"the page: (http://127\.0\.0\.1:\d+)/", processes.log("demo"))
    assert url and healthy(url.group(1))
    children = _children(demo.pid)  # the server and the worker command
    assert len(children) == 2, children
    demo.send_signal(signal.SIGTERM)
    try:
        code = demo.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the demo still runs 60 s after SIGTERM; its output:\n{processes.log('demo')}")
    assert code == 128 + signal.SIGTERM, processes.log("demo")
    wait_for(lambda: not any(_running(pid) for pid in children), 30, "the demo's children to end")
    assert not healthy(url.group(1))
    assert "Traceback" not in processes.log("demo")
