"""A two-objective study end to end: `hpo submit --wait` against a real `hpo server` and
`hpo worker` trains tiny trials that trade validation accuracy against training time, prints the
Pareto front, and the API's `best` (and the Python client's) is the front recomputed here from
the trials."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import hpo
from hpo.protocol import StudyState
from tests.conftest import ROOT, Processes, hpo_command, spec_doc

pytestmark = pytest.mark.e2e

OBJECTIVES = [
    {"metric": "val_accuracy", "direction": "maximize"},
    {"metric": "train_seconds", "direction": "minimize"},
]


def dominated(point: list[float], by: list[float]) -> bool:
    """`by` is at least as accurate and as fast as `point`, and better on one of the two."""
    no_worse = by[0] >= point[0] and by[1] <= point[1]
    return no_worse and (by[0] > point[0] or by[1] < point[1])


def front_of(trials: list[Any]) -> list[int]:
    done = [t for t in trials if t.state.value == "completed"]
    return sorted(
        t.number for t in done if not any(dominated(t.values, o.values) for o in done if o != t)
    )


@pytest.mark.parametrize("kind", ["nsga2", "random"])
def test_a_two_objective_study_ends_with_its_pareto_front(
    processes: Processes, tmp_path: Path, kind: str
) -> None:
    url = processes.server()
    processes.worker("w", url)
    doc = spec_doc(
        f"pareto-{kind}",
        strategy={"kind": kind, "seed": 5},
        budget={"max_trials": 6, "parallel_trials": 1, "epochs": 2},
        space={
            "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
            "width": {"type": "int", "low": 8, "high": 256, "log": True},
        },
        workload={"model": "mlp", "dataset": "synthetic", "n_samples": 256},
    )
    del doc["objective"]
    doc["objectives"] = OBJECTIVES
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        hpo_command("submit", str(path), "--server", url, "--wait"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + processes.log("w")

    study = hpo.Client(url).study(f"pareto-{kind}")
    assert study.state is StudyState.COMPLETED and study.counts["completed"] == 6
    trials = study.trials()
    for trial in trials:
        assert trial.value is None and trial.values is not None
        last = trial.curve()[-1]
        assert trial.values == [last["val_accuracy"], last["train_seconds"]]
        assert last["n_params"] > 0
    front = front_of(trials)
    best = study.best
    assert isinstance(best, list) and front
    assert [b.number for b in best] == front
    by_number = {t.number: t for t in trials}
    assert all(b.values == by_number[b.number].values for b in best)

    out = result.stdout
    assert f"running, Pareto front {len(front)} trial" in out
    assert f"Pareto front (maximize val_accuracy, minimize train_seconds): {len(front)} " in out
    printed = [int(n) for n in re.findall(r"^  trial #(\d+): val_accuracy=", out, re.M)]
    assert printed == front
    first = by_number[front[0]]
    assert f"val_accuracy={first.values[0]:.4g} train_seconds={first.values[1]:.4g}" in out

    frame = study.dataframe()
    assert list(frame.columns[:5]) == [
        "id",
        "number",
        "state",
        "value",
        "values_val_accuracy",
    ]
    assert list(frame["values_val_accuracy"]) == [t.values[0] for t in trials]
    assert list(frame["values_train_seconds"]) == [t.values[1] for t in trials]


def test_the_readme_multi_objective_example_runs(processes: Processes) -> None:
    """The README's two-objective example, as written, on fewer trials."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1]
    example = next(b for b in section.split("```python\n")[1:] if '"objectives"' in b)
    example = example.split("```", 1)[0]
    assert '"budget": {"max_trials": 12, "epochs": 3}' in example
    url = processes.server()
    processes.worker("w", url)
    script = f"import hpo\nclient = hpo.Client({url!r})\n" + example.replace(
        '"max_trials": 12, "epochs": 3', '"max_trials": 4, "epochs": 1'
    ).replace(".wait()", ".wait(progress=False)")
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    study = hpo.Client(url).study("accuracy-vs-time")
    best = study.best
    assert isinstance(best, list) and len(lines) == len(best) > 0
    assert lines[0].startswith(f"{best[0].number} [{best[0].values[0]}, ")
