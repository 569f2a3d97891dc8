"""The README's first command: `hpo demo` runs a real study end to end on local SQLite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import hpo_command

pytestmark = pytest.mark.e2e


def test_hpo_demo_finishes_and_prints_the_best_trial_and_page(tmp_path: Path) -> None:
    result = subprocess.run(
        hpo_command("demo"), capture_output=True, text=True, timeout=280, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "20/20 trials done" in out
    assert "completed" in out
    assert "best trial #" in out and "val_accuracy=" in out
    assert "the page: http://127.0.0.1:" in out
    assert (tmp_path / "hpo-demo.db").exists()  # the results stay for `hpo server` to show
    assert "Traceback" not in result.stderr
