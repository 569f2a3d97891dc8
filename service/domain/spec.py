"""The study spec: pydantic models of the document a user submits, and its loading.

A spec that validates can run: every rule of docs/spec.md is checked here, and a broken one fails
with a `pydantic.ValidationError` whose `loc` names the offending field (``("space", "lr",
"high")``, ``("strategy", "kind")``) and whose message says why in plain words.

Models and datasets registered on the server (plugins) are accepted through the validation
context; without one only the built-ins are::

    StudySpec.model_validate(data, context={"models": {"vit"}, "datasets": {"cifar10"}})
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.domain import fidelity
from service.domain import space as search_space

BUILTIN_MODELS = frozenset({"mlp", "cnn", "resnet"})
BUILTIN_DATASETS = frozenset({"digits", "mnist1d", "synthetic"})
DATASET_PREFIXES = ("npz:", "idx:", "csv:")
OPTIMIZERS = ("sgd", "adamw")
MULTI_FIDELITY_KINDS = frozenset({"successive_halving", "hyperband"})
MAX_GRID_POINTS = 100_000
DEFAULT_MAX_TRIALS = 20
# Trial counts are INTEGER columns (32 bits on PostgreSQL); a million trials is far beyond use.
MAX_TRIALS = 1_000_000
MAX_NAME_LENGTH = 64
SPEC_ERROR_TYPE = "invalid_spec"
"""The pydantic error `type` of every rule this module adds to pydantic's own checks."""

_STUDY_NAME = re.compile(r"[A-Za-z0-9._-]+")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_TAGS = frozenset({"float", "int", "categorical"})

Scalar = str | int | FiniteFloat | bool
"""A value a categorical choice or a `when` condition may hold."""


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class _Issue:
    """One broken rule: where (relative to the model being validated) and why."""

    loc: tuple[str | int, ...]
    msg: str
    input: Any = None
    type: str = SPEC_ERROR_TYPE


def _invalid(msg: str) -> PydanticCustomError:
    """An error for the field being validated; the message is shown as is."""
    return PydanticCustomError(SPEC_ERROR_TYPE, msg)


def _raise(title: str, issues: Iterable[_Issue]) -> None:
    """Raise every issue at once; pydantic prefixes each `loc` with the enclosing fields."""
    details = [
        InitErrorDetails(type=PydanticCustomError(i.type, i.msg), loc=i.loc, input=i.input)
        for i in issues
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: strings quoted, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _show_all(values: list[Any], most: int = 8) -> str:
    """Values for a message, the first `most` of them and an ellipsis for the rest."""
    shown = ", ".join(_show(v) for v in values[:most])
    return shown + ", ..." if len(values) > most else shown


# ---------------------------------------------------------------------------------------------
# Objective, strategy, budget


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    metric: str = Field(default="val_accuracy", min_length=1)
    direction: Literal["maximize", "minimize"] = "maximize"


class Strategy(_Strict):
    """How trials are chosen. `min_epochs` and `reduction_factor` shape successive_halving,
    hyperband and `early_stopping: asha`; `sampler` picks the proposals of successive_halving
    and hyperband, `n_configs` the size of successive halving. Other kinds ignore them."""

    kind: Literal["grid", "random", "tpe", "gp", "successive_halving", "hyperband"]
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    early_stopping: Literal["none", "median", "asha"] = "none"
    min_epochs: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)
    n_configs: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    sampler: Literal["random", "tpe"] = "random"

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
            _raise("Strategy", [_Issue(("early_stopping",), msg, self.early_stopping)])
        return self


class Budget(_Strict):
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    parallel_trials: int = Field(default=1, ge=1, le=1024)
    epochs: int = Field(default=10, ge=1, le=100_000)


# ---------------------------------------------------------------------------------------------
# Parameters


def _when_issues(when: dict[str, Any] | None) -> list[_Issue]:
    """The rules of `when` that need no other parameter: not empty, no empty value lists."""
    if when is None:
        return []
    if not when:
        return [_Issue(("when",), "`when` must name at least one parameter", when)]
    return [
        _Issue(("when", ref), f"the condition on '{ref}' lists no values, so it can never hold")
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


def _values_issue(param: FloatParam | IntParam) -> _Issue | None:
    """A list of `values` replaces the range: it must be non-empty, distinct and alone."""
    values = param.values or []
    for field in ("low", "high", "step", "grid"):
        if getattr(param, field) is not None:
            msg = f"`{field}` cannot be combined with `values`: give a list of values or a range"
            return _Issue((field,), msg, getattr(param, field))
    if param.log:
        return _Issue(("log",), "`log` cannot be combined with `values`", param.log)
    if not values:
        return _Issue(("values",), "`values` must list at least one value", values)
    repeated = _duplicate(values)
    if repeated is not None:
        return _Issue(("values",), f"`values` must be distinct; {_show(repeated)} repeats", values)
    return None


def _bounds_issue(param: FloatParam | IntParam) -> _Issue | None:
    """`low` and `high` are required, ordered, and positive on a log scale."""
    for field in ("low", "high"):
        if getattr(param, field) is None:
            article = "an" if param.type == "int" else "a"
            msg = f"{article} {param.type} parameter needs `low` and `high` (or a list of `values`)"
            return _Issue((field,), msg)
    assert param.low is not None and param.high is not None
    if param.low >= param.high:
        msg = f"`high` ({param.high}) must be greater than `low` ({param.low})"
        return _Issue(("high",), msg, param.high)
    if param.log and param.low <= 0:
        msg = f"`low` must be greater than 0 when `log: true` (got {param.low})"
        return _Issue(("low",), msg, param.low)
    return None


def _step_issue(param: FloatParam | IntParam) -> _Issue | None:
    """A step is positive, fits in the range, and (as in Optuna) does not go with a log scale."""
    step = param.step
    if step is None:
        return None
    assert param.low is not None and param.high is not None
    if step <= 0:
        return _Issue(("step",), f"`step` must be greater than 0 (got {step})", step)
    if step > param.high - param.low:
        width = param.high - param.low
        msg = f"`step` ({step}) is larger than the range `high` - `low` ({width:g})"
        return _Issue(("step",), msg, step)
    if param.log and param.type == "float":
        msg = (
            "`step` cannot be combined with `log: true` for a float parameter (Optuna does not "
            "support it); drop `step`, or give `grid: N` for log-spaced grid points"
        )
        return _Issue(("step",), msg, step)
    if param.log and step != 1:
        msg = "`step` must be 1 when `log: true` (Optuna does not support it for integers)"
        return _Issue(("step",), msg, step)
    return None


def _grid_issue(param: FloatParam | IntParam) -> _Issue | None:
    """`grid: N` asks for N points (at least the two ends) instead of a step ladder."""
    grid = param.grid
    if grid is None:
        return None
    if grid < 2:
        return _Issue(("grid",), f"`grid` must be at least 2 points (got {grid})", grid)
    if grid > MAX_GRID_POINTS:
        return _Issue(("grid",), f"`grid` must be at most {MAX_GRID_POINTS:,} points", grid)
    if param.step is not None:
        msg = "`grid` cannot be combined with `step`: the step already fixes the grid points"
        return _Issue(("grid",), msg, grid)
    return None


def _range_param_issues(param: FloatParam | IntParam) -> list[_Issue]:
    if param.values is not None:
        first = _values_issue(param)
    else:
        first = _bounds_issue(param) or _step_issue(param) or _grid_issue(param)
    return ([first] if first else []) + _when_issues(param.when)


class FloatParam(_Strict):
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

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _raise("FloatParam", _range_param_issues(self))
        return self


class IntParam(_Strict):
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

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _raise("IntParam", _range_param_issues(self))
        return self


class CategoricalParam(_Strict):
    """One of `choices` (strings, numbers or booleans), distinct and at least one."""

    type: Literal["categorical"]
    choices: list[Scalar]
    when: dict[str, Scalar | list[Scalar]] | None = None

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        issues = _when_issues(self.when)
        repeated = _duplicate(self.choices)
        if not self.choices:
            issues.insert(0, _Issue(("choices",), "`choices` must list at least one value", []))
        elif repeated is not None:
            msg = f"`choices` must be distinct; {_show(repeated)} repeats"
            issues.insert(0, _Issue(("choices",), msg, self.choices))
        _raise("CategoricalParam", issues)
        return self


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


# ---------------------------------------------------------------------------------------------
# Workload


def _registered(info: ValidationInfo, key: str) -> frozenset[str]:
    """Names that the validation context adds to the built-ins (plugins on the server)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    return frozenset(context.get(key) or ())


class Workload(BaseModel):
    """What to train. Any extra key (`lr: 0.01`, `n_samples: 4000`, `seed: 1`) fixes a tunable
    or a dataset option; a parameter of the same name in `space` overrides it while active."""

    model_config = ConfigDict(extra="allow")

    model: str
    dataset: str
    optimizer: str = "adamw"
    """sgd or adamw; checked by `StudySpec` unless `optimizer` is searched in the space."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str, info: ValidationInfo) -> str:
        known = BUILTIN_MODELS | _registered(info, "models")
        if model not in known:
            raise _invalid(f"unknown model '{model}'; the models are {', '.join(sorted(known))}")
        return model

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, dataset: str, info: ValidationInfo) -> str:
        for prefix in DATASET_PREFIXES:
            if dataset.startswith(prefix):
                if not dataset[len(prefix) :].strip():
                    raise _invalid(f"dataset '{dataset}' needs a path after '{prefix}'")
                return dataset
        known = BUILTIN_DATASETS | _registered(info, "datasets")
        if dataset not in known:
            names = ", ".join(sorted(known))
            msg = f"unknown dataset '{dataset}'; use one of {names}, or npz:PATH, idx:DIR, csv:PATH"
            raise _invalid(msg)
        return dataset


# ---------------------------------------------------------------------------------------------
# The study spec


def _check_study_name(name: str) -> str:
    if not name:
        raise _invalid("the study name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"the study name has {len(name)} characters; at most 64 are allowed")
    if not _STUDY_NAME.fullmatch(name):
        raise _invalid("the study name may contain only letters, digits, '-', '_' and '.'")
    return name


def _check_param_name(name: str) -> str:
    if not _PARAM_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise _invalid(
            f"parameter name '{name}' must start with a letter or '_' and contain only letters, "
            f"digits and '_' (at most {MAX_NAME_LENGTH} characters)"
        )
    return name


def _relative_to_space(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union tag (`lr.float.high`) and key marker (`lr.[key]`) from a loc."""
    if len(loc) >= 2 and (loc[1] in _PARAM_TAGS or loc[1] == "[key]"):
        return (loc[0], *loc[2:])
    return loc


class StudySpec(_Strict):
    """A whole study spec (docs/spec.md); valid means a study can run from it."""

    name: Annotated[str, AfterValidator(_check_study_name)]
    objective: Objective = Field(default_factory=Objective)
    strategy: Strategy
    budget: Budget = Field(default_factory=Budget)
    space: dict[Annotated[str, AfterValidator(_check_param_name)], Param]
    workload: Workload

    @field_validator("space", mode="wrap")
    @classmethod
    def _space_errors_name_the_parameter(
        cls, value: Any, handler: ValidatorFunctionWrapHandler
    ) -> dict[str, Any]:
        try:
            space: dict[str, Any] = handler(value)
        except ValidationError as exc:
            issues = [
                _Issue(_relative_to_space(e["loc"]), e["msg"], e["input"], e["type"])
                for e in exc.errors()
            ]
            _raise("space", issues)
            raise
        if not space:
            raise _invalid("the space must have at least one parameter to search")
        return space

    @model_validator(mode="after")
    def _check_across_fields(self) -> StudySpec:
        issues = _condition_issues(self) or _cycle_issues(self.space)
        if not issues and self.strategy.kind == "grid":
            issues = _grid_issues(self.space)
        _raise("StudySpec", issues + _optimizer_issues(self) + _fidelity_issues(self))
        return self

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
        if max_trials is not None:
            return max_trials
        return DEFAULT_MAX_TRIALS

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


def _condition_issues(spec: StudySpec) -> list[_Issue]:
    """Each `when` names another parameter of the space, by values that parameter can take."""
    space, grid = spec.space, spec.strategy.kind == "grid"
    issues = []
    for name, param in space.items():
        for ref, allowed in search_space.conditions(param).items():
            loc = ("space", name, "when", ref)
            if ref == name:
                issues.append(_Issue(loc, f"'{name}' cannot depend on itself in `when`"))
            elif ref not in space:
                msg = f"`when` names '{ref}', which is not a parameter in `space`"
                issues.append(_Issue(loc, msg, ref))
            else:
                issue = _condition_value_issue(ref, space[ref], allowed, grid)
                issues += [_Issue(loc, issue, allowed)] if issue else []
    return issues


def _condition_value_issue(ref: str, param: Param, allowed: list[Any], grid: bool) -> str | None:
    """Why `allowed` cannot name values of `param`, or None when each of them can occur."""
    if isinstance(param, FloatParam) and param.values is None:
        return (
            f"'{ref}' is a float range, so a condition cannot require an exact value of it; "
            f"give '{ref}' a list of `values` or make it categorical"
        )
    for value in allowed:
        if not search_space.can_take(param, value, grid=grid):
            return f"'{ref}' can never be {_show(value)}: {_describe_domain(param)}"
    return None


def _describe_domain(param: Param) -> str:
    if isinstance(param, CategoricalParam):
        return f"its choices are {_show_all(param.choices)}"
    if param.values is not None:
        return f"its values are {_show_all(param.values)}"
    if param.grid is not None:
        return f"its grid points are {_show_all(search_space.param_values_for_grid('', param))}"
    return f"it is an integer from {param.low} to {param.high} in steps of {param.step or 1}"


def _cycle_issues(space: Mapping[str, Any]) -> list[_Issue]:
    """Conditions must not form a cycle (a when b, b when a)."""
    for start in space:
        path = _cycle_from(space, [start])
        if path:
            msg = f"the `when` conditions form a cycle: {' -> '.join(path)}"
            return [_Issue(("space", start, "when"), msg)]
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


def _grid_issues(space: Mapping[str, Any]) -> list[_Issue]:
    """Grid search needs finitely many values per parameter and at most MAX_GRID_POINTS."""
    issues = [
        _Issue(
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
    return [_Issue(("space",), msg, size)]


def _optimizer_issues(spec: StudySpec) -> list[_Issue]:
    """The optimizer is sgd or adamw, whether fixed in the workload or searched in the space."""
    param = spec.space.get("optimizer")
    known = ", ".join(OPTIMIZERS)
    if param is None:
        optimizer = spec.workload.optimizer
        if optimizer in OPTIMIZERS:
            return []
        msg = f"unknown optimizer '{optimizer}'; the optimizers are {known}"
        return [_Issue(("workload", "optimizer"), msg, optimizer)]
    if not isinstance(param, CategoricalParam):
        msg = f"`optimizer` must be a categorical parameter over {known}"
        return [_Issue(("space", "optimizer"), msg, param.type)]
    unknown = [c for c in param.choices if c not in OPTIMIZERS]
    if not unknown:
        return []
    msg = f"unknown optimizer {_show(unknown[0])} in `choices`; the optimizers are {known}"
    return [_Issue(("space", "optimizer", "choices"), msg, param.choices)]


def _fidelity_issues(spec: StudySpec) -> list[_Issue]:
    """Successive halving, hyperband and asha start at min_epochs and end at budget.epochs."""
    strategy, budget = spec.strategy, spec.budget
    if not strategy.is_multi_fidelity and strategy.early_stopping != "asha":
        return []
    issues = []
    if strategy.min_epochs > budget.epochs:
        msg = f"min_epochs ({strategy.min_epochs}) must not exceed budget.epochs ({budget.epochs})"
        issues.append(_Issue(("strategy", "min_epochs"), msg, strategy.min_epochs))
    n_configs, max_trials = strategy.n_configs or 0, budget.max_trials
    if strategy.kind == "successive_halving" and max_trials and n_configs > max_trials:
        msg = f"n_configs ({n_configs}) must not exceed budget.max_trials ({max_trials})"
        issues.append(_Issue(("strategy", "n_configs"), msg, n_configs))
    if strategy.kind == "hyperband" and max_trials and not issues:
        needed = sum(b.size for b in spec.brackets())
        if max_trials < needed:
            msg = (
                f"hyperband over {strategy.min_epochs}..{budget.epochs} epochs with "
                f"reduction_factor {strategy.reduction_factor} runs {needed} trials; raise "
                "max_trials to at least that or leave it out"
            )
            issues.append(_Issue(("budget", "max_trials"), msg, max_trials))
    return issues


# ---------------------------------------------------------------------------------------------
# Documents


class SpecDocumentError(ValueError):
    """The text is not YAML/JSON, or its top level is not a mapping of spec fields."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 scalars (`1e-4` is a float; `yes`, `no`, `on`, `off`
    are strings), and refusing duplicate keys and aliases (which could blow up validation)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        self.flatten_mapping(node)
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_SpecLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_spec_document(text: str) -> dict[str, Any]:
    """Parse a spec written in YAML or JSON into a plain mapping (not yet validated).

    Raises SpecDocumentError, with the line and column where known, for text that does not
    parse, an empty document, or a top level that is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)
        raise SpecDocumentError(f"the spec is not valid YAML or JSON: {problem}") from exc
    if data is None:
        raise SpecDocumentError("the spec is empty")
    if not isinstance(data, dict):
        raise SpecDocumentError(
            "the spec must be a mapping of fields (name, strategy, space, workload, ...), "
            f"not a {type(data).__name__}"
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc)
