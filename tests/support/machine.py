"""The one description of the machine a benchmark figure or table was made on."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Machine:
    """CPU, system and the versions that matter to a figure; `line()` for a report,
    `as_dict()` for a JSON file."""

    cpu: str
    cpus: int
    system: str
    python: str
    sqlite: str
    packages: dict[str, str] = field(default_factory=dict)
    torch_threads: int | None = None  # when torch is loaded: the threads an op may use

    def line(self) -> str:
        parts = [
            f"{self.cpus} CPUs ({self.cpu})",
            self.system,
            f"Python {self.python}",
            f"SQLite {self.sqlite}",
            *(f"{name} {v}" for name, v in self.packages.items()),
        ]
        if self.torch_threads is not None:
            parts.append(f"{self.torch_threads} torch threads")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine(*packages: str) -> Machine:
    """This machine, with the installed versions of `packages` (torch's thread count too when
    torch is imported)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    torch = sys.modules.get("torch")
    return Machine(
        cpu=_cpu_model(),
        cpus=os.cpu_count() or 1,
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        packages=versions,
        torch_threads=torch.get_num_threads() if torch is not None else None,
    )
