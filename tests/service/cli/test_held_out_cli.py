"""`hpo submit --wait`'s result lines name the best trial's held-out test score, say why there
is none, or say nothing of it when its worker sent none (issue 13 item 3)."""

from __future__ import annotations

from typing import Any

import pytest

from service.cli import print_result


def _study(test_metrics: dict[str, Any] | None) -> dict[str, Any]:
    best = {"trial_id": 8, "number": 7, "value": 0.97125, "params": {"lr": 0.01}}
    return {
        "name": "digits",
        "state": "completed",
        "reason": None,
        "spec": {"objective": {"metric": "val_accuracy", "direction": "maximize"}},
        "best": {**best, "test_metrics": test_metrics},
    }


def _lines(study: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> list[str]:
    print_result(study)
    return capsys.readouterr().out.splitlines()


def test_the_last_line_is_the_held_out_score(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(_study({"test_accuracy": 0.965, "test_loss": 0.12345}), capsys)
    assert lines[-2] == "best trial #7: val_accuracy=0.9712 with lr=0.01"
    assert lines[-1] == (
        "held-out test of trial #7: test_accuracy=0.965 test_loss=0.1235 (never used for selection)"
    )


def test_no_test_split_is_said_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "the dataset has no test split (test_fraction 0 and none given)"
    lines = _lines(_study({"unavailable": reason}), capsys)
    assert lines[-1] == f"held-out test of trial #7: no score ({reason})"


def test_an_older_worker_leaves_the_result_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(_study(None), capsys)
    assert lines == ["study 'digits' completed", "best trial #7: val_accuracy=0.9712 with lr=0.01"]
