"""The tunables declaration: what it allows, and docs/trainer.md's table generated from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpo import tunables

ROOT = Path(__file__).resolve().parents[2]


def test_the_trainer_docs_table_is_the_declaration() -> None:
    docs = (ROOT / "docs" / "trainer.md").read_text()
    assert tunables.markdown_table() in docs, (
        "docs/trainer.md's tunables table differs from hpo/tunables.py: paste "
        "`python -c 'from hpo.tunables import markdown_table; print(markdown_table())'`"
    )


@pytest.mark.parametrize(
    ("name", "model", "value", "problem"),
    [
        ("lr", None, 0.0, "must be > 0.0, got 0.0"),
        ("lr", None, float("inf"), "must be finite, got inf"),
        ("lr", None, "fast", "must be a number, got 'fast'"),
        ("dropout", "cnn", 1.0, "must be < 1.0, got 1.0"),
        ("dropout", "cnn", 0.999, None),
        ("depth", "mlp", 0, None),
        ("depth", "cnn", 0, "must be >= 1, got 0"),
        ("batch_size", None, 64.0, None),
        ("batch_size", None, 64.5, "must be an integer, got 64.5"),
        ("batch_size", None, True, "must be an integer, got True"),
        ("kernel_size", "cnn", 4, "must be odd (same padding), got 4"),
        ("nesterov", None, "true", None),
        ("nesterov", None, 1, "must be true or false, got 1"),
        ("grad_clip", None, None, None),
        ("norm", None, "magic", "must be one of ['none', 'batch', 'layer', 'group',"),
    ],
)
def test_problem_says_why_a_value_is_refused(
    name: str, model: str | None, value: Any, problem: str | None
) -> None:
    declared = tunables.find(name, model)
    assert declared is not None
    got = declared.problem(value)
    assert got == problem if problem is None else (got is not None and got.startswith(problem))


def test_a_model_reads_its_own_declaration_first() -> None:
    assert tunables.find("channels", "resnet").default == 16  # type: ignore[union-attr]
    assert tunables.find("channels", "cnn").default == 32  # type: ignore[union-attr]
    assert tunables.find("channels", "mlp") is None
    assert tunables.find("width", "cnn") is None
    assert {t.name for t in tunables.for_model("mlp")} >= {"lr", "dropout", "width", "depth"}
