"""`hpo export STUDY --format csv|jsonl [--output F]` against a real `hpo server` with tokens."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ApiWorker, Processes, hpo_command, spec_doc

pytestmark = pytest.mark.e2e
USER, WORKER = "export-user-token", "export-worker-token"


def _hpo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hpo_command(*args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_export_by_name_or_id_to_a_file_or_stdout(processes: Processes, tmp_path: Path) -> None:
    url = processes.server(HPO_API_TOKEN=USER, HPO_WORKER_TOKEN=WORKER)
    auth = {"Authorization": f"Bearer {USER}"}
    with httpx.Client(base_url=url, headers=auth) as http:
        study = http.post("/api/v1/studies", json=spec_doc("cli-export")).json()
        worker = ApiWorker(http)
        for trial, curve in zip(worker.lease(2), [[0.5], [0.25, 0.75]], strict=True):
            assert worker.run(trial, curve).status_code == 200
        trials = http.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]

    out = tmp_path / "trials.csv"
    by_name = _hpo("export", "cli-export", "--output", str(out), "--server", url, "--token", USER)
    assert by_name.returncode == 0, by_name.stderr
    assert f"{out}: " in by_name.stderr and "study 'cli-export'" in by_name.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(int(r["id"]), r["state"]) for r in rows] == [(t["id"], t["state"]) for t in trials]
    assert [float(r["value"]) for r in rows] == [t["value"] for t in trials] == [0.5, 0.75]
    assert [float(r["metrics_val_accuracy"]) for r in rows] == [0.5, 0.75]

    by_id = _hpo("export", str(study["id"]), "--format", "jsonl", "--server", url, "--token", USER)
    assert by_id.returncode == 0, by_id.stderr
    lines = [json.loads(line) for line in by_id.stdout.splitlines()]
    assert [line["params"] for line in lines] == [t["params"] for t in trials]

    missing = _hpo("export", "no-such-study", "--server", url, "--token", USER)
    assert missing.returncode == 1
    assert "404" in missing.stderr and "no study named 'no-such-study'" in missing.stderr
    refused = _hpo("export", "cli-export", "--server", url, "--token", "wrong")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: the server refused the token (401)")
