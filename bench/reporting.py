"""What the bench scripts share to report their figures: order statistics, markdown tables, the
commit measured and the machine (`tests.support.machine`, shared with the tests)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import _repo  # noqa: F401  (puts the repository root on sys.path for tests.support)

from tests.support.machine import Machine, machine

__all__ = ["Machine", "code_version", "machine", "markdown_table", "median", "ms", "quantile"]


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def quantile(values: Sequence[float], q: float) -> float:
    """The value below which a fraction `q` of `values` lies (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], text: int = 1) -> str:
    """A markdown table: the first `text` columns left-aligned, the others (figures) right."""
    align = ["---" if i < text else "---:" for i in range(len(header))]
    lines = [header, align, *([str(cell) for cell in row] for row in rows)]
    return "\n".join(f"| {' | '.join(line)} |" for line in lines)


def code_version(*folders: str) -> str:
    """The commit measured, and how many files in `folders` differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *folders],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        commit = ""
    if not commit:
        return "unknown (not a git checkout)"
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} with {len(changed)} uncommitted files in {' and '.join(folders)}"
