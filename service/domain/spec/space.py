"""The search space: define-by-run sampling with conditions, grid enumeration, distributions.

Every function takes a validated `StudySpec.space` (parameter name to `Param`, in spec order).
A parameter with `when` is active only when each named parameter is active and holds one of the
listed values; an inactive parameter is absent from a trial's params and from a grid point.
Values handed out are plain Python floats, ints, strings and booleans.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from service.domain.spec._params import FloatParam, IntParam, Param

_GRID_DIGITS = 12
"""Significant digits of the points of a `grid: N` float ladder, so that they print nicely."""

_MATCHES_NOTHING = object()
"""Stands for the values of a parameter that no condition names (see `_value_classes`)."""


# ---------------------------------------------------------------------------------------------
# Conditions


def same_value(a: Any, b: Any) -> bool:
    """Equality of choice values as a condition sees it: 1 == 1.0, but true != 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def conditions(param: Param) -> dict[str, list[Any]]:
    """The `when` of a parameter with every expected value as a list ("any of")."""
    return {
        ref: expected if isinstance(expected, list) else [expected]
        for ref, expected in (param.when or {}).items()
    }


def is_active(param: Param, chosen: Mapping[str, Any]) -> bool:
    """True when every `when` condition holds in `chosen` (the values of the active parameters
    so far); False when a parameter it names is absent, that is inactive."""
    return all(
        ref in chosen and any(same_value(chosen[ref], value) for value in expected)
        for ref, expected in conditions(param).items()
    )


def ordered_params(space: Mapping[str, Param]) -> list[tuple[str, Param]]:
    """The parameters with each one after those its `when` names, otherwise in spec order.

    Raises ValueError if the conditions form a cycle (a validated spec has none).
    """
    placed: dict[str, Param] = {}
    pending = list(space.items())
    while pending:
        ready = next(
            (
                i
                for i, (_, param) in enumerate(pending)
                if all(ref in placed or ref not in space for ref in conditions(param))
            ),
            None,
        )
        if ready is None:
            raise ValueError(f"the `when` conditions of {[n for n, _ in pending]} form a cycle")
        name, param = pending.pop(ready)
        placed[name] = param
    return list(placed.items())


def can_take(param: Param, value: Any, *, grid: bool = False) -> bool:
    """Whether the parameter can ever hold `value` (under grid search if `grid`), so that a
    condition on it may hold. A continuous float can take no exact value."""
    if param.type == "categorical":
        return any(same_value(value, choice) for choice in param.choices)
    if param.values is not None or (param.grid is not None and grid):
        return any(same_value(value, v) for v in param_values_for_grid("", param))
    if param.type == "float" or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low, top = _bounds(param)
    step = param.step or 1
    return float(value).is_integer() and low <= value <= top and (int(value) - low) % step == 0


def is_continuous(param: Param) -> bool:
    """A float parameter with no finite set of values (no `values`, `grid` or `step`)."""
    return (
        param.type == "float" and param.values is None and param.grid is None and param.step is None
    )


# ---------------------------------------------------------------------------------------------
# Sampling


def suggest_params(space: Mapping[str, Param], trial: optuna.trial.Trial) -> dict[str, Any]:
    """Ask the trial for a value of every active parameter, define-by-run, in `ordered_params`
    order; inactive parameters are not suggested and are absent from the result.

    A list of `values` is suggested as categorical; a float `step` and `log` are passed on.
    `grid: N` only shapes grid search: other samplers see the whole low..high range.
    """
    chosen: dict[str, Any] = {}
    for name, param in ordered_params(space):
        if is_active(param, chosen):
            chosen[name] = _suggest(trial, name, param)
    return {name: chosen[name] for name in space if name in chosen}


def _suggest(trial: optuna.trial.Trial, name: str, param: Param) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices)
    if param.values is not None:
        return trial.suggest_categorical(name, param.values)
    low, top = _bounds(param)
    if param.type == "float":
        return trial.suggest_float(name, low, top, step=param.step, log=param.log)
    return trial.suggest_int(name, int(low), int(top), step=param.step or 1, log=param.log)


def _bounds(param: FloatParam | IntParam) -> tuple[Any, Any]:
    """`low` and the highest value reachable from it by `step` (Optuna's adjusted `high`,
    computed in decimal so that 0.1 steps stay 0.1, 0.2, 0.3)."""
    if param.low is None or param.high is None:
        raise ValueError("a range parameter needs `low` and `high`")
    if param.step is None:
        return param.low, param.high
    if param.type == "int":
        return param.low, param.low + (param.high - param.low) // param.step * param.step
    low, step = Decimal(str(param.low)), Decimal(str(param.step))
    return param.low, float(low + (_float_ladder_length(param) - 1) * step)


def _float_ladder_length(param: FloatParam | IntParam) -> int:
    """How many points `low + k * step` lie in low..high, counted in decimal."""
    low, high, step = (Decimal(str(x)) for x in (param.low, param.high, param.step))
    return int((high - low) // step) + 1


# ---------------------------------------------------------------------------------------------
# Grid


def param_values_for_grid(name: str, param: Param) -> list[Any]:
    """The finite values grid search tries for one parameter, in increasing (or listed) order:
    `values` or `choices` as given; a float by `step` from `low`, or `grid: N` evenly spaced
    points (log-spaced with `log`, rounded to 12 significant digits); an int by `step` (every
    integer by default) or the distinct integers of a `grid: N` ladder.

    Raises ValueError for a continuous float (no `values`, `grid` or `step`).
    """
    if param.type == "categorical":
        return list(param.choices)
    if param.values is not None:
        return list(param.values)
    if is_continuous(param):
        raise ValueError(
            f"grid search needs finite values for float parameter '{name}': give `values`, "
            "`grid: N` or `step`"
        )
    low, top = _bounds(param)
    if param.grid is not None:
        return _spaced(param, param.grid)
    if param.type == "int":
        return list(range(low, top + 1, param.step or 1))
    low_d, step_d = Decimal(str(low)), Decimal(str(param.step))
    return [float(low_d + k * step_d) for k in range(_float_ladder_length(param))]


def _spaced(param: FloatParam | IntParam, n: int) -> list[Any]:
    """n points from low to high, equally spaced (in log space with `log`), ends exact."""
    low, high = float(param.low or 0), float(param.high or 0)
    if param.log:
        a, b = math.log(low), math.log(high)
        inner = [math.exp(a + (b - a) * i / (n - 1)) for i in range(1, n - 1)]
    else:
        inner = [low + (high - low) * i / (n - 1) for i in range(1, n - 1)]
    if param.type == "int":
        points: list[Any] = [param.low, *(round(x) for x in inner), param.high]
    else:
        rounded = (float(f"{x:.{_GRID_DIGITS}g}") for x in inner)
        points = [param.low, *(min(max(x, low), high) for x in rounded), param.high]
    return list(dict.fromkeys(points))


def _value_count(name: str, param: Param) -> int:
    """len(param_values_for_grid(name, param)), without building long int or step ladders."""
    if param.type == "categorical" or param.values is not None or param.grid is not None:
        return len(param_values_for_grid(name, param))
    if is_continuous(param):
        param_values_for_grid(name, param)  # raises the error that explains
    if param.type == "float":
        return _float_ladder_length(param)
    low, top = _bounds(param)
    return (top - low) // (param.step or 1) + 1


def grid_size(space: Mapping[str, Param]) -> int:
    """The number of grid points, conditional expansion included; equals
    len(grid_points(space)) but is computed without building them (fast for huge grids).

    Independent groups of parameters multiply; inside a group only the values that some
    condition names are told apart, the rest of each parameter is counted in one go.
    Raises ValueError for a continuous float.
    """
    return math.prod(_group_size(space, group) for group in _linked_groups(space))


def _linked_groups(space: Mapping[str, Param]) -> list[list[str]]:
    """The parameters split into groups linked by `when`, each in `ordered_params` order."""
    group_of = {name: {name} for name in space}
    for name, param in space.items():
        for ref in conditions(param):
            if ref in space and group_of[ref] is not group_of[name]:
                merged = group_of[ref] | group_of[name]
                for member in merged:
                    group_of[member] = merged
    groups: dict[int, list[str]] = {}
    for name, _ in ordered_params(space):
        groups.setdefault(id(group_of[name]), []).append(name)
    return list(groups.values())


def _group_size(space: Mapping[str, Param], names: list[str]) -> int:
    referenced = {ref for name in names for ref in conditions(space[name])}
    deciders = [name for name in names if name in referenced]
    leaves = {name: _value_count(name, space[name]) for name in names if name not in referenced}
    classes = {name: _value_classes(space, name) for name in deciders}

    def count(i: int, chosen: dict[str, Any]) -> int:
        if i == len(deciders):
            return math.prod(n for leaf, n in leaves.items() if is_active(space[leaf], chosen))
        name = deciders[i]
        if not is_active(space[name], chosen):
            return count(i + 1, chosen)
        return sum(size * count(i + 1, {**chosen, name: value}) for value, size in classes[name])

    return count(0, {})


def _value_classes(space: Mapping[str, Param], name: str) -> list[tuple[Any, int]]:
    """The grid values of `name` grouped by which conditions they satisfy, as (representative,
    how many values) pairs; values that no condition names form one class."""
    param = space[name]
    named = [v for p in space.values() for v in conditions(p).get(name, [])]
    distinct: list[Any] = []
    for value in named:
        if can_take(param, value, grid=True) and not any(same_value(value, d) for d in distinct):
            distinct.append(value)
    classes = [(value, 1) for value in distinct]
    rest = _value_count(name, param) - len(distinct)
    return [*classes, (_MATCHES_NOTHING, rest)] if rest else classes


def grid_points(space: Mapping[str, Param], seed: int | None = None) -> list[dict[str, Any]]:
    """Every grid point exactly once: a mapping of each active parameter (in spec order) to a
    value; inactive conditional parameters are absent. In itertools.product order over
    `ordered_params` (first parameter slowest), or shuffled by random.Random(seed) when `seed`
    is given, so the same seed gives the same order. Raises ValueError for a continuous float.
    """
    order = ordered_params(space)
    values = {name: param_values_for_grid(name, param) for name, param in order}
    points: list[dict[str, Any]] = []

    def expand(i: int, chosen: dict[str, Any]) -> None:
        if i == len(order):
            points.append({name: chosen[name] for name in space if name in chosen})
            return
        name, param = order[i]
        if not is_active(param, chosen):
            expand(i + 1, chosen)
            return
        for value in values[name]:
            expand(i + 1, {**chosen, name: value})

    expand(0, {})
    if seed is not None:
        random.Random(seed).shuffle(points)
    return points


# ---------------------------------------------------------------------------------------------
# The finite space as samplers see it


def _as_sampled(space: Mapping[str, Param]) -> dict[str, Param]:
    """The space without `grid: N`, which only grid search reads: samplers draw from the whole
    low..high range (by `step`)."""
    return {
        name: param.model_copy(update={"grid": None}) if param.type != "categorical" else param
        for name, param in space.items()
    }


def sampled_size(space: Mapping[str, Param]) -> int | None:
    """How many distinct configurations a sampler (random, tpe, gp) can propose, conditional
    parameters expanded; None when some float parameter is a continuous range."""
    sampled = _as_sampled(space)
    if any(is_continuous(param) for param in sampled.values()):
        return None
    return grid_size(sampled)


def sampled_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every configuration a sampler can propose (see `sampled_size`), in grid order.
    Raises ValueError for a continuous float."""
    return grid_points(_as_sampled(space))


def configuration_key(params: Mapping[str, Any]) -> tuple[tuple[str, bool, Any], ...]:
    """A hashable identity of a configuration: equal for the same values (1 and 1.0 alike,
    true and 1 not; floats to 12 significant digits, so 0.30000000000000004 is 0.3)."""
    return tuple(
        sorted((name, isinstance(value, bool), _rounded(value)) for name, value in params.items())
    )


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{_GRID_DIGITS}g}")
    return value


# ---------------------------------------------------------------------------------------------
# Optuna distributions


def distribution_for(param: Param, value: Any = None) -> BaseDistribution:
    """The distribution that `suggest_params` would record for this parameter, to pass to
    `storage.set_trial_param` for a value chosen outside a sampler (a grid point).

    A list of values is categorical; a `grid: N` float or int is its low..high range.
    Raises ValueError if `value` is given and lies outside the distribution.
    """
    distribution: BaseDistribution
    if param.type == "categorical":
        distribution = CategoricalDistribution(param.choices)
    elif param.values is not None:
        distribution = CategoricalDistribution(param.values)
    elif param.type == "float":
        low, top = _bounds(param)
        distribution = FloatDistribution(low, top, log=param.log, step=param.step)
    else:
        low, top = _bounds(param)
        distribution = IntDistribution(low, top, log=param.log, step=param.step or 1)
    if value is not None and not _holds(distribution, value):
        raise ValueError(f"{value!r} lies outside {distribution}")
    return distribution


def _holds(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return any(same_value(value, choice) for choice in distribution.choices)
    if isinstance(distribution, FloatDistribution | IntDistribution):
        return not isinstance(value, bool) and distribution.low <= value <= distribution.high
    return False


def to_internal(distribution: BaseDistribution, value: Any) -> float:
    """The float Optuna's storage keeps for `value` (distribution.to_internal_repr)."""
    return float(distribution.to_internal_repr(value))
