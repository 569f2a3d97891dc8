"""Where bench/service_overhead.py's in-process loop spends its time, from its cProfile stats:
the hotspots' cumulative time and self time by package, as markdown."""

from __future__ import annotations

import os
import pstats
from collections import defaultdict
from pathlib import Path

# Where the profiled loop spends its time (cumulative): (file suffix, function, label).
HOTSPOTS = [
    ("service/domain/leasing.py", "lease", "`Leasing.lease`"),
    ("service/domain/search.py", "ask_many", "of which `search.ask_many` (Optuna)"),
    ("optuna/study/study.py", "_pop_waiting_trial_id", "of which `Study._pop_waiting_trial_id`"),
    ("service/domain/reporting.py", "report", "`Reporting.report`"),
    ("service/domain/search.py", "report_values", "of which `search.report_values` (Optuna)"),
    ("service/domain/reporting.py", "complete", "`Reporting.complete`"),
    ("service/domain/search.py", "record_curve", "of which `search.record_curve` (Optuna)"),
    ("service/domain/search.py", "tell", "of which `search.tell` (Optuna)"),
]


def package_of(filename: str, function: str) -> str:
    if filename == "~":
        if "sqlite3." in function:
            return "SQLite (sqlite3 C calls)"
        return "pydantic" if "pydantic_core" in function else "other C built-ins"
    for marker, name in (
        ("/sqlalchemy/", "SQLAlchemy (Python)"),
        ("/optuna/", "Optuna (Python)"),
        ("/pydantic", "pydantic"),
        ("/service/", "service code"),
    ):
        if marker in filename:
            return name
    return "other Python (stdlib)"


def profile_tables(stats: pstats.Stats) -> list[str]:
    """Cumulative time of the hotspots, and self time by package, as markdown."""
    rows = stats.stats.items()  # type: ignore[attr-defined]
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, function), row in rows:
        by_package[package_of(filename, function)] += row[2]
    total = sum(by_package.values())
    lines = ["| profiled call | calls | cumulative | share |", "| --- | ---: | ---: | ---: |"]
    for suffix, name, label in HOTSPOTS:
        found = [
            r for (f, _l, fn), r in rows if fn == name and f.endswith(suffix.replace("/", os.sep))
        ]
        calls, seconds = sum(r[1] for r in found), sum(r[3] for r in found)
        lines.append(f"| {label} | {calls} | {seconds:.2f} s | {100 * seconds / total:.0f}% |")
    lines += ["", "| package (self time) | seconds | share |", "| --- | ---: | ---: |"]
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} s | {100 * seconds / total:.0f}% |")
    return lines


def top_functions(stats: pstats.Stats, count: int) -> str:
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    lines = [f"Top {count} functions by self time (cProfile, in-process loop):"]
    for (filename, line, function), (_cc, calls, self_s, cum_s, _callers) in rows[:count]:
        where = f"{Path(filename).name}:{line}" if filename != "~" else "built-in"
        lines.append(
            f"  {self_s:7.3f} s self {cum_s:7.3f} s cum {calls:8d} x  {function} ({where})"
        )
    return "\n".join(lines)
