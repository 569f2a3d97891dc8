"""The trial's params, read with validation; a bad one raises TrainingError.

`Params` is what models, datasets and the loop read their hyperparameters through, and
`TrainingError` the failure every part of the trainer raises with a reason the user reads (the
worker imports it from `trainer.train`, which re-exports it). Both sit at the bottom of the
trainer's import graph, importing nothing of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hpo import tunables


class TrainingError(Exception):
    """A trial-level failure with a user-readable reason (str(exc)).

    NaN/inf loss, a bad dataset file, a bad parameter, CUDA out of memory: the worker reports the
    trial `failed` with this reason and goes on serving.
    """


class Params:
    """Read access to a trial's params that validates every value and names the bad parameter.

    Each getter returns the default when the key is absent and raises TrainingError when the value
    has the wrong type or lies outside its range. Keys that were read are recorded in `used`, so the
    loop can warn about keys nothing read (typos).
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.used: set[str] = set()

    def raw(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.values.get(name, default)

    def unused(self) -> list[str]:
        return sorted(set(self.values) - self.used)

    def tunable(self, name: str, model: str | None = None) -> Any:
        """The value of a declared tunable (hpo.tunables) as `model` reads it: the declared
        default when absent, else the value checked against the declaration.

        Raises TrainingError naming the param when the value is not allowed; KeyError when the
        trainer declares no tunable `name` for `model` (a bug, not a user's mistake).
        """
        declared = tunables.find(name, model)
        if declared is None:
            raise KeyError(f"no tunable {name!r} is declared for model {model!r}")
        value = declared.coerce(self.raw(name, declared.default))
        problem = declared.problem(value)
        if problem:
            raise TrainingError(f"param {name!r} {problem}")
        return float(value) if declared.type == "float" and value is not None else value

    def get_int(self, name: str, default: int, *, low: int | None = None) -> int:
        value = self.raw(name, default)
        # YAML/JSON and some samplers hand integers over as floats (64.0).
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainingError(f"param {name!r} must be an integer, got {value!r}")
        if low is not None and value < low:
            raise TrainingError(f"param {name!r} must be >= {low}, got {value}")
        return value

    def get_float(
        self, name: str, default: float, *, low: float | None = None, below: float | None = None
    ) -> float:
        """A finite float with low <= value (< below when given)."""
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainingError(f"param {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise TrainingError(f"param {name!r} must be finite, got {value}")
        if low is not None and value < low:
            raise TrainingError(f"param {name!r} must be >= {low}, got {value}")
        if below is not None and value >= below:
            raise TrainingError(f"param {name!r} must be < {below}, got {value}")
        return value

    def get_optional_float(self, name: str, *, above: float) -> float | None:
        """None when absent or null, else a finite float strictly greater than `above`."""
        if self.raw(name) is None:
            return None
        value = self.get_float(name, 0.0)
        if value <= above:
            raise TrainingError(f"param {name!r} must be > {above}, got {value}")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise TrainingError(f"param {name!r} must be true or false, got {value!r}")
        return value

    def get_str(self, name: str, default: str) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise TrainingError(f"param {name!r} must be a string, got {value!r}")
        return value

    def get_choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        value = self.get_str(name, default)
        options = list(choices)
        if value not in options:
            raise TrainingError(f"param {name!r} must be one of {options}, got {value!r}")
        return value
