"""The study as a whole: objective, strategy and budget, the spec that holds them with its
parameters and workload, and the rules across fields (conditions, cycles, grid size, optimizer,
fidelity)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from hpo import tunables
from hpo.tunables import Tunable
from service.domain import fidelity
from service.domain.spec import space as search_space
from service.domain.spec._errors import (
    Issue,
    Strict,
    invalid,
    raise_issues,
    show,
    show_all,
)
from service.domain.spec._initial import MAX_INITIAL, initial_issues
from service.domain.spec._params import (
    MAX_GRID_POINTS,
    CategoricalParam,
    FloatParam,
    Param,
)
from service.domain.spec._tunables import tunable_issues
from service.domain.spec._workload import Workload

OPTIMIZERS = tunables.choices("optimizer")
MULTI_FIDELITY_KINDS = frozenset({"successive_halving", "hyperband"})
MAX_OBJECTIVES = 3
"""Past three objectives nearly every trial is on the Pareto front (there is always some objective
a trial is best at), so the front no longer narrows the choice, cannot be drawn, and NSGA-II's
crowding distance stops telling points apart."""
DEFAULT_MAX_TRIALS = 20
MAX_KEPT_MODELS = 1000
# Trial counts are INTEGER columns (32 bits on PostgreSQL); a million trials is far beyond use.
MAX_TRIALS = 1_000_000
MAX_NAME_LENGTH = 64

_STUDY_NAME = re.compile(r"[A-Za-z0-9._-]+")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_TAGS = frozenset({"float", "int", "categorical"})


# ---------------------------------------------------------------------------------------------
# Objective, strategy, budget


_MINIMIZED = frozenset({"loss", "error", "err"})
_MAXIMIZED = frozenset({"accuracy", "acc"})


def inferred_direction(metric: str) -> Literal["maximize", "minimize"] | None:
    """The direction a metric's name implies: minimize a loss or an error (`val_loss`,
    `train_loss`, `test_error`), maximize an accuracy (`val_accuracy`, `top1_acc`); None when
    the name says neither (`f1`, `lr`, `epoch_seconds`)."""
    last = re.split(r"[^a-z0-9]+", metric.lower())[-1]
    if last in _MINIMIZED:
        return "minimize"
    if last in _MAXIMIZED:
        return "maximize"
    return None


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class Objective(Strict):
    """The metric to optimize and which way. Without `direction` it is inferred from the
    metric's name (`inferred_direction`), and a metric whose name implies none is refused."""

    metric: str = Field(default="val_accuracy", min_length=1)
    direction: Literal["maximize", "minimize"] = Field(
        default="maximize",
        description="minimize or maximize; when left out, minimize for a loss or error metric "
        "(`val_loss`), maximize for an accuracy (`val_accuracy`), else the spec is refused",
        json_schema_extra=_without_default,
    )

    @model_validator(mode="before")
    @classmethod
    def _infer_direction(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("direction") is not None:
            return data
        metric = data.get("metric", "val_accuracy")
        direction = inferred_direction(metric) if isinstance(metric, str) else None
        if direction is None and isinstance(metric, str) and metric:
            msg = (
                f"cannot tell whether to maximize or minimize metric '{metric}' from its name; "
                "give `direction: maximize` or `direction: minimize`"
            )
            raise_issues("Objective", [Issue(("direction",), msg, None)])
        return {**data, "direction": direction} if direction else data

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


class Strategy(Strict):
    """How trials are chosen. `min_epochs` and `reduction_factor` shape successive_halving,
    hyperband and `early_stopping: asha`; `sampler` picks the proposals of successive_halving
    and hyperband, `n_configs` the size of successive halving. Other kinds ignore them."""

    kind: Literal["grid", "random", "tpe", "gp", "nsga2", "successive_halving", "hyperband"]
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    early_stopping: Literal["none", "median", "asha"] = "none"
    min_epochs: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)
    n_configs: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    sampler: Literal["random", "tpe", "bohb"] = "random"
    random_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    """sampler: bohb: the share of proposals drawn at random (default 1/3, as in BOHB)."""
    allow_repeats: bool = False
    """random, tpe, gp over a finite space: propose a configuration already tried (another
    seed's run of it, say); by default each is tried once and the study ends when all were."""

    @property
    def is_multi_fidelity(self) -> bool:
        """True for successive_halving and hyperband, which decide themselves when to stop."""
        return self.kind in MULTI_FIDELITY_KINDS

    @model_validator(mode="after")
    def _early_stopping_fits_kind(self) -> Strategy:
        if self.is_multi_fidelity and self.early_stopping != "none":
            msg = (
                f"early_stopping cannot be used with {self.kind}, which already stops weak "
                "trials early; leave early_stopping: none"
            )
            raise_issues("Strategy", [Issue(("early_stopping",), msg, self.early_stopping)])
        return self

    @model_validator(mode="after")
    def _bohb_fits_kind(self) -> Strategy:
        """BOHB models each rung's budget, so it needs rungs; random_fraction is BOHB's."""
        if self.sampler == "bohb" and not self.is_multi_fidelity:
            msg = (
                f"sampler bohb models the results of each rung of successive_halving or "
                f"hyperband, and {self.kind} has no rungs; use kind: hyperband or "
                "successive_halving with it, or kind: tpe for a model-based search without rungs"
            )
            raise_issues("Strategy", [Issue(("sampler",), msg, self.sampler)])
        if self.random_fraction is not None and self.sampler != "bohb":
            msg = f"random_fraction is used only by sampler: bohb, not by sampler: {self.sampler}"
            raise_issues("Strategy", [Issue(("random_fraction",), msg, self.random_fraction)])
        return self


class Budget(Strict):
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    parallel_trials: int = Field(default=1, ge=1, le=1024)
    epochs: int = Field(default=10, ge=1, le=100_000)


# ---------------------------------------------------------------------------------------------
# The study spec


def _check_study_name(name: str) -> str:
    if not name:
        raise invalid("the study name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise invalid(
            f"the study name has {len(name)} characters; at most {MAX_NAME_LENGTH} are allowed"
        )
    if not _STUDY_NAME.fullmatch(name):
        raise invalid("the study name may contain only letters, digits, '-', '_' and '.'")
    return name


def _check_param_name(name: str) -> str:
    if not _PARAM_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise invalid(
            f"parameter name '{name}' must start with a letter or '_' and contain only letters, "
            f"digits and '_' (at most {MAX_NAME_LENGTH} characters)"
        )
    return name


def _relative_to_space(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union tag (`lr.float.high`) and key marker (`lr.[key]`) from a loc."""
    if len(loc) >= 2 and (loc[1] in _PARAM_TAGS or loc[1] == "[key]"):
        return (loc[0], *loc[2:])
    return loc


class StudySpec(Strict):
    """A whole study spec (docs/spec.md); valid means a study can run from it."""

    name: Annotated[str, AfterValidator(_check_study_name)]
    objective: Objective = Field(default_factory=Objective)
    objectives: list[Objective] | None = Field(
        default=None,
        min_length=2,
        json_schema_extra={"maxItems": MAX_OBJECTIVES},
        description="multi-objective: 2 or 3 objectives optimized together, instead of "
        "`objective`; the study's best is then its Pareto set",
    )
    strategy: Strategy
    budget: Budget = Field(default_factory=Budget)
    space: dict[Annotated[str, AfterValidator(_check_param_name)], Param]
    workload: Workload
    initial: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_INITIAL,
        description="warm start: configurations ({param: value, ...}) that run first, in order; "
        "parameters left out are chosen by the sampler",
    )
    keep_models: int = Field(
        default=3,
        ge=0,
        le=MAX_KEPT_MODELS,
        description="the model files of the best this many completed trials are kept for "
        "download (every Pareto-front trial's with several objectives); 0: none are uploaded",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_kind_of_objective(cls, data: Any) -> Any:
        """`objectives` replaces `objective`, which then holds the first of them (what a worker
        and the single-valued views read). A spec read back from a study has both, the same."""
        if not isinstance(data, Mapping) or data.get("objectives") is None:
            return data
        objectives = data["objectives"]
        first = objectives[0] if isinstance(objectives, list) and objectives else None
        if "objective" in data and data["objective"] != first:
            msg = "give either `objective` or `objectives`, not both"
            raise_issues("StudySpec", [Issue(("objective",), msg, data["objective"])])
        return {**data, "objective": first} if isinstance(first, Mapping) else data

    @model_validator(mode="after")
    def _check_objectives(self) -> StudySpec:
        raise_issues("StudySpec", _objectives_issues(self))
        return self

    @property
    def is_multi_objective(self) -> bool:
        return self.objectives is not None

    @property
    def all_objectives(self) -> list[Objective]:
        """The objectives in the spec's order: `objectives`, else [`objective`]."""
        return self.objectives if self.objectives is not None else [self.objective]

    @field_validator("space", mode="wrap")
    @classmethod
    def _space_errors_name_the_parameter(
        cls, value: Any, handler: ValidatorFunctionWrapHandler
    ) -> dict[str, Any]:
        try:
            space: dict[str, Any] = handler(value)
        except ValidationError as exc:
            issues = [
                Issue(_relative_to_space(e["loc"]), e["msg"], e["input"], e["type"])
                for e in exc.errors()
            ]
            raise_issues("space", issues)
            raise
        if not space:
            raise invalid("the space must have at least one parameter to search")
        return space

    @model_validator(mode="after")
    def _check_across_fields(self, info: ValidationInfo) -> StudySpec:
        issues = _condition_issues(self) or _cycle_issues(self.space) or _param_issues(self.space)
        if not issues and self.strategy.kind == "grid":
            issues = _grid_issues(self.space)
        issues += _optimizer_issues(self) + _fidelity_issues(self)
        issues += initial_issues(self.space, self.initial, self.strategy.kind)
        if not issues and not _stored(info):
            issues = _tunable_issues(self, _plugin_tunables(info))
        raise_issues("StudySpec", issues)
        return self

    def trainer_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's params as the trainer reads them: each under the trainer param it sets
        (its `param`, else its own name)."""
        return {_sets(self.space.get(name), name): value for name, value in params.items()}

    def effective_max_trials(self) -> int:
        """How many trials the study creates at most: for grid, the grid size (capped by
        `budget.max_trials` when set); for successive_halving and hyperband, the trials of their
        brackets; otherwise `max_trials`, else DEFAULT_MAX_TRIALS (20)."""
        max_trials = self.budget.max_trials
        if self.strategy.kind == "grid":
            size = search_space.grid_size(self.space)
            return size if max_trials is None else min(max_trials, size)
        if self.strategy.is_multi_fidelity:
            return sum(bracket.size for bracket in self.brackets())
        wanted = DEFAULT_MAX_TRIALS if max_trials is None else max_trials
        distinct = self.distinct_configurations()
        return wanted if distinct is None else min(wanted, distinct)

    def distinct_configurations(self) -> int | None:
        """How many configurations random, tpe and gp may try, each once: the size of a
        finite space (every float with `values` or `step`). None when there is no such limit:
        a continuous float, `allow_repeats`, or grid and multi-fidelity kinds (grid tries each
        point once by itself; successive halving and hyperband fill their brackets)."""
        sampled = ("random", "tpe", "gp", "nsga2")
        if self.strategy.kind not in sampled or self.strategy.allow_repeats:
            return None
        return search_space.sampled_size(self.space)

    def exhausted_note(self) -> str | None:
        """Why a completed study ran fewer trials than its budget asked: every configuration of
        its finite space was tried. None when the budget, not the space, ended it."""
        distinct = self.distinct_configurations()
        wanted = self.budget.max_trials or DEFAULT_MAX_TRIALS
        if distinct is None or distinct >= wanted:
            return None
        return (
            f"the space has {distinct} configurations and each was tried once (max_trials "
            f"{wanted}); set strategy.allow_repeats to try some again"
        )

    def brackets(self) -> list[fidelity.Bracket]:
        """The brackets of successive_halving (one; `n_configs` configurations, else
        `budget.max_trials`, else enough that one reaches the last rung) or hyperband."""
        strategy = self.strategy
        return fidelity.schedule(
            strategy.kind,
            strategy.n_configs or self.budget.max_trials,
            strategy.min_epochs,
            self.budget.epochs,
            strategy.reduction_factor,
        )


def _objectives_issues(spec: StudySpec) -> list[Issue]:
    """Each objective's metric once; and no strategy that ranks trials by one value: successive
    halving and hyperband promote the best of a rung, median and asha early stopping compare a
    trial's value with others' at the same epoch, and a trial beaten on one objective may be on
    the Pareto front by another."""
    if spec.objectives is None:
        return []
    if len(spec.objectives) > MAX_OBJECTIVES:
        msg = (
            f"{len(spec.objectives)} objectives; at most {MAX_OBJECTIVES} are allowed: with more, "
            "nearly every trial is on the Pareto front and the front no longer narrows the choice"
        )
        return [Issue(("objectives",), msg, len(spec.objectives))]
    issues = []
    seen: set[str] = set()
    for i, objective in enumerate(spec.objectives):
        if objective.metric in seen:
            msg = f"metric '{objective.metric}' is already an objective; give each metric once"
            issues.append(Issue(("objectives", i, "metric"), msg, objective.metric))
        seen.add(objective.metric)
    strategy = spec.strategy
    if strategy.is_multi_fidelity:
        msg = (
            f"{strategy.kind} promotes the best trials of each rung by one value, which a study "
            "with several objectives does not have; use random, grid, tpe, gp or nsga2"
        )
        issues.append(Issue(("strategy", "kind"), msg, strategy.kind))
    elif strategy.early_stopping != "none":
        msg = (
            f"early_stopping {strategy.early_stopping} stops a trial whose one value is worse "
            "than others' at the same epoch, which a study with several objectives does not "
            "have; leave early_stopping: none"
        )
        issues.append(Issue(("strategy", "early_stopping"), msg, strategy.early_stopping))
    return issues


def _condition_issues(spec: StudySpec) -> list[Issue]:
    """Each `when` names another parameter of the space, by values that parameter can take."""
    space, grid = spec.space, spec.strategy.kind == "grid"
    issues = []
    for name, param in space.items():
        for ref, allowed in search_space.conditions(param).items():
            loc = ("space", name, "when", ref)
            if ref == name:
                issues.append(Issue(loc, f"'{name}' cannot depend on itself in `when`"))
            elif ref not in space:
                msg = f"`when` names '{ref}', which is not a parameter in `space`"
                issues.append(Issue(loc, msg, ref))
            else:
                issue = _condition_value_issue(ref, space[ref], allowed, grid)
                issues += [Issue(loc, issue, allowed)] if issue else []
    return issues


def _sets(param: Param | None, name: str) -> str:
    """The trainer param that the space's parameter `name` sets."""
    return param.param if param is not None and param.param else name


def _param_issues(space: Mapping[str, Param]) -> list[Issue]:
    """A `param` is a parameter name that no other parameter of the space has, and parameters
    that set the same trainer param are never active together: their `when` conditions on some
    parameter have no value in common."""
    issues = []
    for name, param in space.items():
        target = param.param
        if target is None or target == name:
            continue
        if not _PARAM_NAME.fullmatch(target):
            issues.append(Issue(("space", name, "param"), f"'{target}' is not a parameter name"))
        elif target in space:
            msg = f"'{target}' is a parameter of the space itself; give this one a `param` only "
            msg += "when no parameter has that name"
            issues.append(Issue(("space", name, "param"), msg, target))
        else:
            clash = next(
                (
                    other
                    for other, other_param in space.items()
                    if other != name
                    and _sets(other_param, other) == target
                    and not _exclusive(param, other_param)
                ),
                None,
            )
            if clash is not None:
                msg = (
                    f"'{name}' and '{clash}' both set '{target}': give them `when` conditions "
                    "that never hold together (such as different optimizers)"
                )
                issues.append(Issue(("space", name, "param"), msg, target))
    return issues


def _exclusive(a: Param, b: Param) -> bool:
    """Whether two parameters' `when` conditions can never hold at once."""
    conditions_a, conditions_b = search_space.conditions(a), search_space.conditions(b)
    return any(
        not any(search_space.same_value(x, y) for x in values for y in conditions_b[ref])
        for ref, values in conditions_a.items()
        if ref in conditions_b
    )


def _condition_value_issue(ref: str, param: Param, allowed: list[Any], grid: bool) -> str | None:
    """Why `allowed` cannot name values of `param`, or None when each of them can occur."""
    if isinstance(param, FloatParam) and param.values is None:
        return (
            f"'{ref}' is a float range, so a condition cannot require an exact value of it; "
            f"give '{ref}' a list of `values` or make it categorical"
        )
    for value in allowed:
        if not search_space.can_take(param, value, grid=grid):
            return f"'{ref}' can never be {show(value)}: {_describe_domain(param)}"
    return None


def _describe_domain(param: Param) -> str:
    if isinstance(param, CategoricalParam):
        return f"its choices are {show_all(param.choices)}"
    if param.values is not None:
        return f"its values are {show_all(param.values)}"
    if param.grid is not None:
        return f"its grid points are {show_all(search_space.param_values_for_grid('', param))}"
    return f"it is an integer from {param.low} to {param.high} in steps of {param.step or 1}"


def _cycle_issues(space: Mapping[str, Any]) -> list[Issue]:
    """Conditions must not form a cycle (a when b, b when a)."""
    for start in space:
        path = _cycle_from(space, [start])
        if path:
            msg = f"the `when` conditions form a cycle: {' -> '.join(path)}"
            return [Issue(("space", start, "when"), msg)]
    return []


def _cycle_from(space: Mapping[str, Any], path: list[str]) -> list[str] | None:
    """A path of `when` references from path[0] back to itself, if any (depth first)."""
    for ref in search_space.conditions(space[path[-1]]):
        if ref == path[0]:
            return [*path, ref]
        if ref in space and ref not in path:
            found = _cycle_from(space, [*path, ref])
            if found:
                return found
    return None


def _grid_issues(space: Mapping[str, Any]) -> list[Issue]:
    """Grid search needs finitely many values per parameter and at most MAX_GRID_POINTS."""
    issues = [
        Issue(
            ("space", name),
            f"grid search needs finite values for float parameter '{name}': give `values`, "
            "`grid: N` or `step`",
        )
        for name, param in space.items()
        if search_space.is_continuous(param)
    ]
    if issues:
        return issues
    size = search_space.grid_size(space)
    if size <= MAX_GRID_POINTS:
        return []
    msg = (
        f"the grid has {size:,} points, more than the limit of {MAX_GRID_POINTS:,}; give fewer "
        "values, a smaller `grid: N`, or use random or tpe search"
    )
    return [Issue(("space",), msg, size)]


def _optimizer_issues(spec: StudySpec) -> list[Issue]:
    """The optimizer is sgd or adamw, whether fixed in the workload or searched in the space."""
    param = spec.space.get("optimizer")
    known = ", ".join(OPTIMIZERS)
    if param is None:
        optimizer = spec.workload.optimizer
        if optimizer in OPTIMIZERS:
            return []
        msg = f"unknown optimizer '{optimizer}'; the optimizers are {known}"
        return [Issue(("workload", "optimizer"), msg, optimizer)]
    if not isinstance(param, CategoricalParam):
        msg = f"`optimizer` must be a categorical parameter over {known}"
        return [Issue(("space", "optimizer"), msg, param.type)]
    unknown = [c for c in param.choices if c not in OPTIMIZERS]
    if not unknown:
        return []
    msg = f"unknown optimizer {show(unknown[0])} in `choices`; the optimizers are {known}"
    return [Issue(("space", "optimizer", "choices"), msg, param.choices)]


def _stored(info: ValidationInfo) -> bool:
    """The spec of an existing study (context `stored`), read again: its values were checked
    against the tunables when it was created, and a later, stricter check must not make it
    unreadable."""
    return isinstance(info.context, Mapping) and bool(info.context.get("stored"))


def _plugin_tunables(info: ValidationInfo) -> list[Tunable]:
    """The tunables that registered plugins declare (the validation context's `tunables`)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    return [Tunable.model_validate(t) for t in context.get("tunables") or ()]


def _tunable_issues(spec: StudySpec, plugins: list[Tunable]) -> list[Issue]:
    """Values of the built-in trainer's tunables, or of those a plugin model declares (the
    optimizer has its own rule, for every model): checked once the rest of the spec holds, so
    that each message is about one thing."""
    space = {name: param for name, param in spec.space.items() if name != "optimizer"}
    fixed = dict(spec.workload.model_extra or {})
    return tunable_issues(spec.workload.model, space, fixed, plugins)


def _fidelity_issues(spec: StudySpec) -> list[Issue]:
    """Successive halving, hyperband and asha start at min_epochs and end at budget.epochs."""
    strategy, budget = spec.strategy, spec.budget
    if not strategy.is_multi_fidelity and strategy.early_stopping != "asha":
        return []
    issues = []
    if strategy.min_epochs > budget.epochs:
        msg = f"min_epochs ({strategy.min_epochs}) must not exceed budget.epochs ({budget.epochs})"
        issues.append(Issue(("strategy", "min_epochs"), msg, strategy.min_epochs))
    n_configs, max_trials = strategy.n_configs or 0, budget.max_trials
    if strategy.kind == "successive_halving" and max_trials and n_configs > max_trials:
        msg = f"n_configs ({n_configs}) must not exceed budget.max_trials ({max_trials})"
        issues.append(Issue(("strategy", "n_configs"), msg, n_configs))
    if strategy.kind == "hyperband" and max_trials and not issues:
        needed = sum(b.size for b in spec.brackets())
        if max_trials < needed:
            msg = (
                f"hyperband over {strategy.min_epochs}..{budget.epochs} epochs with "
                f"reduction_factor {strategy.reduction_factor} runs {needed} trials; raise "
                "max_trials to at least that or leave it out"
            )
            issues.append(Issue(("budget", "max_trials"), msg, max_trials))
    return issues
