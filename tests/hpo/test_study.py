"""`hpo.Client` and `hpo.Study` as a notebook uses them, against a real `hpo server` (and a real
`hpo worker` where trials must train): create, wait, trials, dataframe, steering, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hpo
from hpo.protocol import StudyState, TrialState
from tests.conftest import ROOT, Processes, spec_doc

pytestmark = pytest.mark.e2e
USER, WORKER = "study-user-token", "study-worker-token"


def test_a_study_from_yaml_text_trains_and_comes_home_as_a_dataframe(
    processes: Processes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = processes.server()
    processes.worker("w", url)
    doc = spec_doc(
        "notebook",
        budget={"max_trials": 3, "parallel_trials": 1, "epochs": 2},
        workload={"model": "mlp", "dataset": "digits"},
    )
    client = hpo.Client(url)
    study = client.create_study(yaml.safe_dump(doc))
    assert (study.name, study.state) == ("notebook", StudyState.RUNNING)

    assert study.wait(timeout=240, progress=False) is study
    assert study.state is StudyState.COMPLETED and study.counts["completed"] == 3

    monkeypatch.setattr("hpo.study.PAGE", 2)  # three trials take two pages
    trials = study.trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state is TrialState.COMPLETED and t.epochs == 2 for t in trials)
    best = study.best
    assert best is not None
    assert best.value == max(t.value for t in trials if t.value is not None)
    curve = trials[best.number].curve()
    assert [p["epoch"] for p in curve] == [1, 2]
    assert curve[-1]["val_accuracy"] == best.value

    frame = study.dataframe()
    assert list(frame.index) == [0, 1, 2]
    assert {"params_lr", "params_norm", "metrics_val_accuracy", "train_seconds"} <= set(frame)
    assert frame.loc[best.number, "value"] == best.value
    assert frame.loc[best.number, "params_lr"] == best.params["lr"]
    assert list(frame["metrics_val_accuracy"]) == [t.value for t in trials]
    assert (frame["state"] == "completed").all() and (frame["train_seconds"] > 0).all()
    with_curves = study.dataframe(curves=True)
    assert [len(c) for c in with_curves["curve"]] == [2, 2, 2]

    study.extend(4)
    assert study.state is StudyState.RUNNING and study.max_trials == 4
    capsys.readouterr()
    study.wait(timeout=240)
    assert study.counts["completed"] == 4
    assert "4/4 trials done" in capsys.readouterr().out
    assert client.study("notebook").best == study.best


def test_steering_and_errors_carry_the_servers_field_and_reason(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server(HPO_API_TOKEN=USER, HPO_WORKER_TOKEN=WORKER)
    with pytest.raises(hpo.ApiError) as refused:
        hpo.Client(url).study(1)
    assert refused.value.status == 401

    client = hpo.Client(url, token=USER)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec_doc("from-a-file")))
    study = client.create_study(str(path))
    assert client.study("from-a-file").id == client.study(str(study.id)).id == study.id

    with pytest.raises(hpo.ApiError) as taken:
        client.create_study(path)
    assert taken.value.status == 409
    assert taken.value.reason == "a study named 'from-a-file' already exists"
    bad = spec_doc("bad", space={"lr": {"type": "float", "low": 1.0, "high": 0.1}})
    with pytest.raises(hpo.ApiError) as invalid:
        client.create_study(bad)
    assert (invalid.value.status, invalid.value.field) == (422, "space.lr.high")
    assert "greater than" in invalid.value.reason
    with pytest.raises(hpo.ApiError) as missing:
        client.study("no-such-study")
    assert (missing.value.status, missing.value.field) == (404, None)

    assert study.stop().state is StudyState.STOPPED
    with pytest.raises(hpo.ApiError) as too_few:
        study.extend(0)
    assert too_few.value.field == "budget.max_trials"
    assert study.resume().state is StudyState.RUNNING
    with pytest.raises(TimeoutError, match="still running"):
        study.wait(timeout=1, progress=False)  # no worker: nothing trains
    study.delete()
    with pytest.raises(hpo.ApiError) as gone:
        study.refresh()
    assert (gone.value.status, gone.value.reason) == (404, f"study {study.id} not found")


def test_the_readme_example_runs(processes: Processes, tmp_path: Path) -> None:
    """The README's Python example, as written, on a smaller study than examples/demo.yaml."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'client.create_study("examples/demo.yaml")' in example
    url = processes.server()
    processes.worker("w", url)
    small = tmp_path / "small.yaml"
    small.write_text(
        yaml.safe_dump(
            spec_doc(
                "readme",
                budget={"max_trials": 2, "parallel_trials": 1, "epochs": 2},
                workload={"model": "mlp", "dataset": "digits"},
            )
        )
    )
    script = example.replace("http://127.0.0.1:8000", url).replace("examples/demo.yaml", str(small))
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    assert "completed trial_id=" in run.stdout
    assert "params_lr" in run.stdout
    assert "TrialState.COMPLETED" in run.stdout
