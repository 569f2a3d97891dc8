"""The `space` of a study spec: one model per parameter type, with the checks that need no
other parameter (range, step, grid, values, the shape of `when`).

Rules across parameters (what `when` names, cycles, the size of a grid) are the study's, in
`spec`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, FiniteFloat, model_validator

from service.domain.spec._errors import Issue, Strict, raise_issues, show

MAX_GRID_POINTS = 100_000

Scalar = str | int | FiniteFloat | bool
"""A value a categorical choice or a `when` condition may hold."""
TrainerParam = Annotated[
    str | None,
    Field(
        description="The trainer param this parameter sets, when not its own name: two "
        "parameters whose `when` never both hold may set one param from two ranges "
        "(`weight_decay` per optimizer)."
    ),
]


def _when_issues(when: dict[str, Any] | None) -> list[Issue]:
    """The rules of `when` that need no other parameter: not empty, no empty value lists."""
    if when is None:
        return []
    if not when:
        return [Issue(("when",), "`when` must name at least one parameter", when)]
    return [
        Issue(("when", ref), f"the condition on '{ref}' lists no values, so it can never hold")
        for ref, expected in when.items()
        if expected == []
    ]


def _duplicate(values: list[Any]) -> Any | None:
    """The first value equal to an earlier one (1 and 1.0 are equal; true and 1 are not, as in
    `space.same_value`)."""
    seen: set[tuple[bool, Any]] = set()
    for value in values:
        key = (isinstance(value, bool), value)
        if key in seen:
            return value
        seen.add(key)
    return None


def _values_issue(param: FloatParam | IntParam) -> Issue | None:
    """A list of `values` replaces the range: it must be non-empty, distinct and alone."""
    values = param.values or []
    for field in ("low", "high", "step", "grid"):
        if getattr(param, field) is not None:
            msg = f"`{field}` cannot be combined with `values`: give a list of values or a range"
            return Issue((field,), msg, getattr(param, field))
    if param.log:
        return Issue(("log",), "`log` cannot be combined with `values`", param.log)
    if not values:
        return Issue(("values",), "`values` must list at least one value", values)
    repeated = _duplicate(values)
    if repeated is not None:
        return Issue(("values",), f"`values` must be distinct; {show(repeated)} repeats", values)
    return None


def _bounds_issue(param: FloatParam | IntParam) -> Issue | None:
    """`low` and `high` are required, ordered, and positive on a log scale."""
    for field in ("low", "high"):
        if getattr(param, field) is None:
            article = "an" if param.type == "int" else "a"
            msg = f"{article} {param.type} parameter needs `low` and `high` (or a list of `values`)"
            return Issue((field,), msg)
    assert param.low is not None and param.high is not None
    if param.low >= param.high:
        msg = f"`high` ({param.high}) must be greater than `low` ({param.low})"
        return Issue(("high",), msg, param.high)
    if param.log and param.low <= 0:
        msg = f"`low` must be greater than 0 when `log: true` (got {param.low})"
        return Issue(("low",), msg, param.low)
    return None


def _step_issue(param: FloatParam | IntParam) -> Issue | None:
    """A step is positive, fits in the range, and (as in Optuna) does not go with a log scale."""
    step = param.step
    if step is None:
        return None
    assert param.low is not None and param.high is not None
    if step <= 0:
        return Issue(("step",), f"`step` must be greater than 0 (got {step})", step)
    if step > param.high - param.low:
        width = param.high - param.low
        msg = f"`step` ({step}) is larger than the range `high` - `low` ({width:g})"
        return Issue(("step",), msg, step)
    if param.log and param.type == "float":
        msg = (
            "`step` cannot be combined with `log: true` for a float parameter (Optuna does not "
            "support it); drop `step`, or give `grid: N` for log-spaced grid points"
        )
        return Issue(("step",), msg, step)
    if param.log and step != 1:
        msg = "`step` must be 1 when `log: true` (Optuna does not support it for integers)"
        return Issue(("step",), msg, step)
    return None


def _grid_issue(param: FloatParam | IntParam) -> Issue | None:
    """`grid: N` asks for N points (at least the two ends) instead of a step ladder."""
    grid = param.grid
    if grid is None:
        return None
    if grid < 2:
        return Issue(("grid",), f"`grid` must be at least 2 points (got {grid})", grid)
    if grid > MAX_GRID_POINTS:
        return Issue(("grid",), f"`grid` must be at most {MAX_GRID_POINTS:,} points", grid)
    if param.step is not None:
        msg = "`grid` cannot be combined with `step`: the step already fixes the grid points"
        return Issue(("grid",), msg, grid)
    return None


def _range_param_issues(param: FloatParam | IntParam) -> list[Issue]:
    if param.values is not None:
        first = _values_issue(param)
    else:
        first = _bounds_issue(param) or _step_issue(param) or _grid_issue(param)
    return ([first] if first else []) + _when_issues(param.when)


class FloatParam(Strict):
    """A float from `low` to `high` (log-uniform with `log`, on a ladder with `step`), or one of
    `values`. `grid: N` gives grid search N evenly (log-) spaced points; others ignore it."""

    type: Literal["float"]
    low: FiniteFloat | None = None
    high: FiniteFloat | None = None
    log: bool = False
    step: FiniteFloat | None = None
    values: list[FiniteFloat] | None = None
    grid: int | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None
    param: TrainerParam = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        raise_issues("FloatParam", _range_param_issues(self))
        return self


class IntParam(Strict):
    """An integer from `low` to `high` inclusive (by `step`, or log-uniform with `log`), or one
    of `values`. Grid search takes every integer of the range, or `grid: N` spaced ones."""

    type: Literal["int"]
    low: int | None = None
    high: int | None = None
    log: bool = False
    step: int | None = None
    values: list[int] | None = None
    grid: int | None = None
    when: dict[str, Scalar | list[Scalar]] | None = None
    param: TrainerParam = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        raise_issues("IntParam", _range_param_issues(self))
        return self


class CategoricalParam(Strict):
    """One of `choices` (strings, numbers or booleans), distinct and at least one."""

    type: Literal["categorical"]
    choices: list[Scalar]
    when: dict[str, Scalar | list[Scalar]] | None = None
    param: TrainerParam = None

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        issues = _when_issues(self.when)
        repeated = _duplicate(self.choices)
        if not self.choices:
            issues.insert(0, Issue(("choices",), "`choices` must list at least one value", []))
        elif repeated is not None:
            msg = f"`choices` must be distinct; {show(repeated)} repeats"
            issues.insert(0, Issue(("choices",), msg, self.choices))
        raise_issues("CategoricalParam", issues)
        return self


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
