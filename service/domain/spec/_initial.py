"""Warm start: the configurations of a spec's `initial` list, which run before the sampler's own
(Optuna's `enqueue_trial`). Each is checked like the parameters a sampler would choose: every
key a parameter of the space, every value one the parameter can take, no conditional parameter
whose `when` the configuration does not meet. Parameters left out are chosen by the sampler."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from service.domain.spec import space as search_space
from service.domain.spec._errors import Issue, show, show_all
from service.domain.spec._params import Param

MAX_INITIAL = 1000


def initial_issues(
    space: Mapping[str, Param], initial: list[dict[str, Any]], strategy: str
) -> list[Issue]:
    """Why the configurations `initial` cannot run first in a study of `space` and `strategy`
    (locations relative to the spec: `("initial", 0, "lr")`)."""
    if initial and strategy == "grid":
        msg = "grid search tries every point of its grid in turn; `initial` is for the others"
        return [Issue(("initial",), msg)]
    issues: list[Issue] = []
    for i, configuration in enumerate(initial):
        issues += configuration_issues(space, configuration, ("initial", i))
    return issues


def configuration_issues(
    space: Mapping[str, Param], configuration: Mapping[str, Any], loc: tuple[str | int, ...]
) -> list[Issue]:
    """Why one configuration is not one the space could give (empty: it could)."""
    if not configuration:
        return [Issue(loc, "a configuration names at least one parameter")]
    issues = []
    for name, value in configuration.items():
        param = space.get(name)
        if param is None:
            known = ", ".join(space)
            msg = f"'{name}' is not a parameter of the space ({known})"
            issues.append(Issue((*loc, name), msg, name))
        elif not takes(param, value):
            msg = f"{show(value)} is not a value of '{name}': {allowed(param)}"
            issues.append(Issue((*loc, name), msg, value))
        elif param.when and not search_space.is_active(param, configuration):
            conditions = ", ".join(
                f"{ref} in [{show_all(values)}]"
                for ref, values in search_space.conditions(param).items()
            )
            msg = f"'{name}' exists only when {conditions}, which this configuration does not set"
            issues.append(Issue((*loc, name), msg, value))
    return issues


def takes(param: Param, value: Any) -> bool:
    """Whether a sampler could give the parameter `value`."""
    if param.type == "categorical" or param.values is not None or param.type == "int":
        return search_space.can_take(param, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    low, high = param.low, param.high
    if low is None or high is None or not low <= value <= high:
        return False
    if param.step is None:
        return True
    steps = (value - low) / param.step
    return abs(steps - round(steps)) < 1e-9


def allowed(param: Param) -> str:
    if param.type == "categorical":
        return f"one of {show_all(param.choices)}"
    if param.values is not None:
        return f"one of {show_all(param.values)}"
    step = f" in steps of {show(param.step)}" if param.step else ""
    kind = "an integer" if param.type == "int" else "a number"
    return f"{kind} from {show(param.low)} to {show(param.high)}{step}"


def initial_params(space: Mapping[str, Param], configuration: Mapping[str, Any]) -> dict[str, Any]:
    """A valid configuration with integer parameters as ints (3.0 is 3), as samplers give them."""
    return {
        name: int(value) if space[name].type == "int" else value
        for name, value in configuration.items()
    }
