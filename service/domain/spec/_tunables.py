"""The spec against the built-in trainer's tunables (hpo.tunables): every value the workload
fixes and every value the space can hand out must be one the trainer accepts, so a study never
starts whose trials fail on the worker or train nonsense.

A plugin model or training function reads its params its own way: only the tunables it
declares (hpo.tunables.Tunable objects, sent by the workers that have it when they register)
are checked, and nothing else of its params.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from hpo import tunables
from hpo.tunables import Tunable
from service.domain.spec import space as search_space
from service.domain.spec._errors import Issue, show, show_all
from service.domain.spec._params import CategoricalParam, FloatParam, IntParam, Param

_MOST_ENUMERATED = 10_000
"""An int range with more values than this is checked at its ends only (and not for odd values
or group counts): every built-in bound is an end, and no width needs that many group counts."""


def tunable_issues(
    model: str,
    space: dict[str, Param],
    fixed: dict[str, Any],
    plugins: Sequence[Tunable] = (),
) -> list[Issue]:
    """Every value of a declared tunable that `model` reads, in the space or fixed in the
    workload (`fixed`), checked against its declaration; then the group counts against the
    model's layer widths. A plugin `model` is checked against the tunables it declares in
    `plugins`, and only those."""
    if model not in tunables.BUILTIN_MODELS:
        return _declared_issues(model, space, fixed, plugins)
    issues: list[Issue] = []
    always = {param.param or name for name, param in space.items() if not param.when}
    for name, value in fixed.items():
        declared = tunables.find(name, model)
        # the workload's value holds where the space leaves the parameter out (`when`)
        if declared is not None and name not in always:
            problem = declared.problem(value)
            if problem:
                issues.append(Issue(("workload", name), _message(declared, problem), value))
    for name, param in space.items():
        declared = tunables.find(param.param or name, model)
        if declared is not None:
            issues += _param_issues(name, param, declared)
    return issues or _group_issues(model, space, fixed)


def _declared_issues(
    model: str, space: dict[str, Param], fixed: dict[str, Any], plugins: Sequence[Tunable]
) -> list[Issue]:
    """A plugin model's values against the tunables it declares."""
    own = {t.name: t for t in plugins if model in t.models}
    issues: list[Issue] = []
    always = {param.param or name for name, param in space.items() if not param.when}
    for name, value in fixed.items():
        problem = own[name].problem(value) if name in own and name not in always else None
        if problem:
            issues.append(Issue(("workload", name), _message(own[name], problem), value))
    for name, param in space.items():
        declared = own.get(param.param or name)
        if declared is not None:
            issues += _param_issues(name, param, declared)
    return issues


def _message(declared: Tunable, problem: str) -> str:
    return f"`{declared.name}` {problem}; it takes {declared.allowed()} ({declared.description})"


def _param_issues(name: str, param: Param, declared: Tunable) -> list[Issue]:
    """The values a parameter of the space can take, each against the declaration."""
    loc: tuple[str | int, ...] = ("space", name)
    if isinstance(param, CategoricalParam):
        return _values_issues((*loc, "choices"), param.choices, declared)
    if param.values is not None:
        return _values_issues((*loc, "values"), param.values, declared)
    if declared.type in ("choice", "bool"):
        msg = f"`{declared.name}` takes {declared.allowed()}: make it a categorical parameter"
        return [Issue((*loc, "type"), msg, param.type)]
    if declared.type == "int" and isinstance(param, FloatParam):
        msg = f"`{declared.name}` takes {declared.allowed()}: make it an int parameter"
        return [Issue((*loc, "type"), msg, param.type)]
    for end in ("low", "high"):
        value = getattr(param, end)
        problem = declared.problem(value)
        if problem:
            return [Issue((*loc, end), _message(declared, problem), value)]
    if isinstance(param, IntParam) and declared.odd:
        return _values_issues(loc, list(_int_values(param) or []), declared)
    return []


def _values_issues(loc: tuple[str | int, ...], values: list[Any], declared: Tunable) -> list[Issue]:
    """One issue for the values the declaration refuses, naming them all."""
    refused = [(value, declared.problem(value)) for value in values]
    refused = [(value, problem) for value, problem in refused if problem]
    if not refused:
        return []
    value, problem = refused[0]
    assert problem is not None
    msg = _message(declared, problem)
    if len(refused) > 1:
        msg = f"{show_all([v for v, _ in refused])} are not allowed: {msg}"
    return [Issue(loc, msg, value)]


def _int_values(param: IntParam) -> list[int] | None:
    """The integers of an int range, or None when there are too many to list."""
    low, high, step = param.low or 0, param.high or 0, param.step or 1
    if (high - low) // step + 1 > _MOST_ENUMERATED:
        return None
    return [int(v) for v in search_space.param_values_for_grid("", param)]


def _possible(
    name: str, space: dict[str, Param], fixed: dict[str, Any], default: Any
) -> list[Any] | None:
    """Every value `name` can have in a trial (the workload's or the default when it is not
    in the space), or None when they are too many to list (a float range, a long int range)."""
    param = space.get(name)
    if param is None:
        return [fixed.get(name, default)]
    if isinstance(param, CategoricalParam):
        values = list(param.choices)
    elif param.values is not None:
        values = list(param.values)
    elif isinstance(param, IntParam):
        values = _int_values(param)  # type: ignore[assignment]
        if values is None:
            return None
    else:
        return None
    if param.when:  # inactive in some trials: then the workload's value (or the default) holds
        values.append(fixed.get(name, default))
    return values


def _group_issues(model: str, space: dict[str, Param], fixed: dict[str, Any]) -> list[Issue]:
    """With norm `group` possible, every possible group count must divide every possible width
    of the model's layers (all multiples of its WIDTH_PARAM tunable)."""
    norms = _possible("norm", space, fixed, "none") or []
    if "group" not in norms:
        return []
    width_name = tunables.WIDTH_PARAM[model]
    groups_decl, width_decl = tunables.find("groups", model), tunables.find(width_name, model)
    assert groups_decl is not None and width_decl is not None
    groups = _possible("groups", space, fixed, groups_decl.default)
    widths = _possible(width_name, space, fixed, width_decl.default)
    if groups is None or widths is None:
        return []
    counts = sorted({int(g) for g in groups if groups_decl.problem(g) is None})
    sizes = sorted({int(w) for w in widths if width_decl.problem(w) is None})
    refused = [g for g in counts if any(w % g for w in sizes)]
    if not refused:
        return []
    divisors = _divisors(math.gcd(*sizes))
    where = f"`{width_name}` {show_all(sizes)}"
    msg = (
        f"with norm 'group', `groups` must divide every layer width of the {model} "
        f"({where}): {show_all(refused)} {'does' if len(refused) == 1 else 'do'} not; "
        f"choose among {show_all(divisors, most=12)}"
    )
    if "groups" in space:
        return [Issue(("space", "groups", *_values_field(space["groups"])), msg, refused[0])]
    if "groups" in fixed:
        return [Issue(("workload", "groups"), msg, refused[0])]
    loc = ("space", width_name) if width_name in space else ("workload", width_name)
    return [Issue(loc, msg + f" (or set `groups`; its default is {show(groups_decl.default)})")]


def _values_field(param: Param) -> Iterator[str]:
    if isinstance(param, CategoricalParam):
        yield "choices"
    elif param.values is not None:
        yield "values"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
