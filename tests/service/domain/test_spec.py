"""The study spec: what a user may write, and what they are told when it is wrong."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from service.domain.spec import (
    DEFAULT_MAX_TRIALS,
    CategoricalParam,
    FloatParam,
    IntParam,
    SpecDocumentError,
    StudySpec,
    load_spec_document,
)

DESIGN_EXAMPLE = """
name: mnist1d-cnn                 # unique; letters, digits, - _ . ; at most 64
objective: {metric: val_accuracy, direction: maximize}
strategy:
  kind: tpe
  seed: 0
  early_stopping: none
budget:
  max_trials: 30
  parallel_trials: 4
  epochs: 20
space:
  lr:           {type: float, low: 1.0e-4, high: 0.3, log: true}
  batch_size:   {type: categorical, choices: [32, 64, 128, 256]}
  dropout:      {type: float, low: 0.0, high: 0.5}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  norm:         {type: categorical, choices: [none, batch, layer, group, instance, weight, selu]}
  groups:       {type: int, values: [1, 2, 4, 8], when: {norm: group}}
  optimizer:    {type: categorical, choices: [sgd, adamw]}
  momentum:     {type: float, low: 0.5, high: 0.99, when: {optimizer: sgd}}
workload:
  model: cnn
  dataset: mnist1d
  n_samples: 4000
  label: y
"""


def base() -> dict[str, Any]:
    """A small valid spec that each failing case below breaks in one place."""
    return {
        "name": "study-1",
        "strategy": {"kind": "random"},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        },
        "workload": {"model": "mlp", "dataset": "digits"},
    }


def patched(changes: dict[str, Any]) -> dict[str, Any]:
    """base() with each dotted path set to its value (a dict replaces the whole subtree)."""
    spec = base()
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)
    return spec


def first_error(data: dict[str, Any], **kwargs: Any) -> ErrorDetails:
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(data, **kwargs)
    return caught.value.errors()[0]


def f(**fields: Any) -> dict[str, Any]:
    return {"type": "float", **fields}


def i(**fields: Any) -> dict[str, Any]:
    return {"type": "int", **fields}


def c(*choices: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices), **fields}


GRID = {"strategy.kind": "grid"}

# (changes to base(), the loc of the first error, a fragment of its message)
INVALID = {
    "unknown strategy kind": (
        {"strategy.kind": "bayes"},
        ("strategy", "kind"),
        "Input should be 'grid', 'random', 'tpe', 'gp', 'nsga2', 'successive_halving' or "
        "'hyperband'",
    ),
    "float low > high": (
        {"space.lr": f(low=0.5, high=0.1)},
        ("space", "lr", "high"),
        "`high` (0.1) must be greater than `low` (0.5)",
    ),
    "float low == high": (
        {"space.lr": f(low=0.5, high=0.5)},
        ("space", "lr", "high"),
        "`high` (0.5) must be greater than `low` (0.5)",
    ),
    "int low > high": (
        {"space.layers": i(low=4, high=2)},
        ("space", "layers", "high"),
        "`high` (2) must be greater than `low` (4)",
    ),
    "float log with low 0": (
        {"space.lr.low": 0.0},
        ("space", "lr", "low"),
        "`low` must be greater than 0 when `log: true` (got 0.0)",
    ),
    "int log with negative low": (
        {"space.width": i(low=-4, high=64, log=True)},
        ("space", "width", "low"),
        "`low` must be greater than 0 when `log: true` (got -4)",
    ),
    "empty choices": (
        {"space.norm": c()},
        ("space", "norm", "choices"),
        "`choices` must list at least one value",
    ),
    "duplicate choices": (
        {"space.norm": c("batch", "layer", "batch")},
        ("space", "norm", "choices"),
        "`choices` must be distinct; 'batch' repeats",
    ),
    "duplicate numeric choices": (
        {"space.batch_size": c(32, 64, 32.0)},
        ("space", "batch_size", "choices"),
        "`choices` must be distinct; 32.0 repeats",
    ),
    "float without low": (
        {"space.dropout": f(high=0.5)},
        ("space", "dropout", "low"),
        "a float parameter needs `low` and `high` (or a list of `values`)",
    ),
    "float without high": (
        {"space.dropout": f(low=0.0)},
        ("space", "dropout", "high"),
        "a float parameter needs `low` and `high` (or a list of `values`)",
    ),
    "int without bounds": (
        {"space.layers": i()},
        ("space", "layers", "low"),
        "an int parameter needs `low` and `high` (or a list of `values`)",
    ),
    "empty values": (
        {"space.dropout": f(values=[])},
        ("space", "dropout", "values"),
        "`values` must list at least one value",
    ),
    "duplicate values": (
        {"space.layers": i(values=[1, 2, 1])},
        ("space", "layers", "values"),
        "`values` must be distinct; 1 repeats",
    ),
    "values with a range": (
        {"space.dropout": f(values=[0.1, 0.2], low=0.0)},
        ("space", "dropout", "low"),
        "`low` cannot be combined with `values`",
    ),
    "float step zero": (
        {"space.dropout": f(low=0.0, high=0.5, step=0.0)},
        ("space", "dropout", "step"),
        "`step` must be greater than 0 (got 0.0)",
    ),
    "int step negative": (
        {"space.layers": i(low=1, high=8, step=-1)},
        ("space", "layers", "step"),
        "`step` must be greater than 0 (got -1)",
    ),
    "step larger than the range": (
        {"space.dropout": f(low=0.0, high=0.5, step=0.75)},
        ("space", "dropout", "step"),
        "`step` (0.75) is larger than the range `high` - `low` (0.5)",
    ),
    "float log with step": (
        {"space.lr.step": 0.01},
        ("space", "lr", "step"),
        "`step` cannot be combined with `log: true` for a float parameter",
    ),
    "int log with step 2": (
        {"space.width": i(low=8, high=512, log=True, step=2)},
        ("space", "width", "step"),
        "`step` must be 1 when `log: true`",
    ),
    "grid of one point": (
        {"space.dropout": f(low=0.0, high=0.5, grid=1)},
        ("space", "dropout", "grid"),
        "`grid` must be at least 2 points (got 1)",
    ),
    "grid with step": (
        {"space.dropout": f(low=0.0, high=0.5, grid=3, step=0.1)},
        ("space", "dropout", "grid"),
        "`grid` cannot be combined with `step`",
    ),
    "non-finite bound": (
        {"space.dropout": f(low=0.0, high=math.inf)},
        ("space", "dropout", "high"),
        "Input should be a finite number",
    ),
    "grid over an unbounded float": (
        GRID,
        ("space", "lr"),
        "grid search needs finite values for float parameter 'lr': give `values`, `grid: N`",
    ),
    "grid too large": (
        {**GRID, "space": {"a": i(low=1, high=1000), "b": i(low=1, high=1000)}},
        ("space",),
        "the grid has 1,000,000 points, more than the limit of 100,000",
    ),
    "conditional grid too large": (
        {
            **GRID,
            "space": {
                "optimizer": c("sgd", "adamw"),
                "a": i(low=1, high=1000, when={"optimizer": "sgd"}),
                "b": i(low=1, high=1000, when={"optimizer": "sgd"}),
            },
        },
        ("space",),
        "the grid has 1,000,001 points",
    ),
    "unknown model": (
        {"workload.model": "vgg"},
        ("workload", "model"),
        "unknown model 'vgg'; the models are cnn, mlp, resnet",
    ),
    "unknown dataset": (
        {"workload.dataset": "cifar10"},
        ("workload", "dataset"),
        "unknown dataset 'cifar10'; use one of digits, mnist1d, synthetic, or npz:PATH",
    ),
    "npz dataset without a path": (
        {"workload.dataset": "npz:"},
        ("workload", "dataset"),
        "dataset 'npz:' needs a path after 'npz:'",
    ),
    "csv dataset with a blank path": (
        {"workload.dataset": "csv:  "},
        ("workload", "dataset"),
        "needs a path after 'csv:'",
    ),
    "unknown fixed optimizer": (
        {"space": {"lr": f(low=0.001, high=0.1)}, "workload.optimizer": "adam"},
        ("workload", "optimizer"),
        "unknown optimizer 'adam'; the optimizers are adamw, sgd",
    ),
    "unknown searched optimizer": (
        {"space.optimizer": c("sgd", "lion")},
        ("space", "optimizer", "choices"),
        "unknown optimizer 'lion' in `choices`",
    ),
    "optimizer searched as a number": (
        {"space.optimizer": i(low=0, high=1)},
        ("space", "optimizer"),
        "`optimizer` must be a categorical parameter over adamw, sgd",
    ),
    "when names a missing parameter": (
        {"space.momentum": f(low=0.5, high=0.99, when={"optimiser": "sgd"})},
        ("space", "momentum", "when", "optimiser"),
        "`when` names 'optimiser', which is not a parameter in `space`",
    ),
    "when names a value outside the choices": (
        {"space.momentum": f(low=0.5, high=0.99, when={"optimizer": ["sgd", "adam"]})},
        ("space", "momentum", "when", "optimizer"),
        "'optimizer' can never be 'adam': its choices are 'sgd', 'adamw'",
    ),
    "when names a value outside an int range": (
        {"space.layers": i(low=1, high=4), "space.width": i(low=8, high=64, when={"layers": 9})},
        ("space", "width", "when", "layers"),
        "'layers' can never be 9: it is an integer from 1 to 4 in steps of 1",
    ),
    "when names a value of the wrong type": (
        {"space.flag": c(True, False), "space.width": i(low=8, high=64, when={"flag": "true"})},
        ("space", "width", "when", "flag"),
        "'flag' can never be 'true': its choices are true, false",
    ),
    "when names a continuous float": (
        {"space.width": i(low=8, high=64, when={"lr": 0.1})},
        ("space", "width", "when", "lr"),
        "'lr' is a float range, so a condition cannot require an exact value of it",
    ),
    "when on itself": (
        {"space.width": i(low=8, high=64, when={"width": 8})},
        ("space", "width", "when", "width"),
        "'width' cannot depend on itself in `when`",
    ),
    "when cycle": (
        {
            "space.a": c("x", "y", when={"b": "x"}),
            "space.b": c("x", "y", when={"a": "x"}),
        },
        ("space", "a", "when"),
        "the `when` conditions form a cycle: a -> b -> a",
    ),
    "empty when": (
        {"space.width": i(low=8, high=64, when={})},
        ("space", "width", "when"),
        "`when` must name at least one parameter",
    ),
    "when with an empty list": (
        {"space.width": i(low=8, high=64, when={"optimizer": []})},
        ("space", "width", "when", "optimizer"),
        "the condition on 'optimizer' lists no values, so it can never hold",
    ),
    "name too long": (
        {"name": "x" * 65},
        ("name",),
        "the study name has 65 characters; at most 64 are allowed",
    ),
    "name with a space": (
        {"name": "my study"},
        ("name",),
        "the study name may contain only letters, digits, '-', '_' and '.'",
    ),
    "empty name": ({"name": ""}, ("name",), "the study name must not be empty"),
    "bad parameter name": (
        {"space.learning-rate": f(low=0.1, high=0.2)},
        ("space", "learning-rate"),
        "parameter name 'learning-rate' must start with a letter or '_'",
    ),
    "empty space": (
        {"space": {}},
        ("space",),
        "the space must have at least one parameter to search",
    ),
    "unknown parameter type": (
        {"space.lr": {"type": "double", "low": 0.1, "high": 0.2}},
        ("space", "lr"),
        "Input tag 'double' found using 'type' does not match any of the expected tags",
    ),
    "unknown parameter field": (
        {"space.lr.scale": "log"},
        ("space", "lr", "scale"),
        "Extra inputs are not permitted",
    ),
    "max_trials 0": (
        {"budget.max_trials": 0},
        ("budget", "max_trials"),
        "Input should be greater than or equal to 1",
    ),
    "parallel_trials 0": (
        {"budget.parallel_trials": 0},
        ("budget", "parallel_trials"),
        "Input should be greater than or equal to 1",
    ),
    "parallel_trials too many": (
        {"budget.parallel_trials": 5000},
        ("budget", "parallel_trials"),
        "Input should be less than or equal to 1024",
    ),
    "negative seed": (
        {"strategy.seed": -1},
        ("strategy", "seed"),
        "Input should be greater than or equal to 0",
    ),
    "min_epochs beyond epochs": (
        {"strategy": {"kind": "successive_halving", "min_epochs": 30}, "budget.epochs": 20},
        ("strategy", "min_epochs"),
        "min_epochs (30) must not exceed budget.epochs (20)",
    ),
    "hyperband min_epochs beyond default epochs": (
        {"strategy": {"kind": "hyperband", "min_epochs": 11}},
        ("strategy", "min_epochs"),
        "min_epochs (11) must not exceed budget.epochs (10)",
    ),
    "asha min_epochs beyond epochs": (
        {"strategy": {"kind": "tpe", "early_stopping": "asha", "min_epochs": 12}},
        ("strategy", "min_epochs"),
        "min_epochs (12) must not exceed budget.epochs (10)",
    ),
    "n_configs beyond max_trials": (
        {"strategy": {"kind": "successive_halving", "n_configs": 27}, "budget.max_trials": 9},
        ("strategy", "n_configs"),
        "n_configs (27) must not exceed budget.max_trials (9)",
    ),
    "early stopping with successive halving": (
        {"strategy": {"kind": "successive_halving", "early_stopping": "median"}},
        ("strategy", "early_stopping"),
        "early_stopping cannot be used with successive_halving",
    ),
    "early stopping with hyperband": (
        {"strategy": {"kind": "hyperband", "early_stopping": "asha"}},
        ("strategy", "early_stopping"),
        "early_stopping cannot be used with hyperband",
    ),
    "metric whose direction cannot be inferred": (
        {"objective": {"metric": "f1"}},
        ("objective", "direction"),
        "cannot tell whether to maximize or minimize metric 'f1'",
    ),
    "unknown top-level field": (
        {"budjet": {"epochs": 3}},
        ("budjet",),
        "Extra inputs are not permitted",
    ),
}


@pytest.mark.parametrize(("changes", "loc", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_spec_names_the_field_and_the_reason(
    changes: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    error = first_error(patched(changes))
    assert error["loc"] == loc
    assert message in error["msg"]


def test_min_epochs_is_ignored_where_it_means_nothing() -> None:
    data = patched({"strategy": {"kind": "tpe", "early_stopping": "median", "min_epochs": 50}})
    assert StudySpec.model_validate(data).strategy.min_epochs == 50


def test_every_problem_is_reported_at_once() -> None:
    data = patched({"name": "bad name", "space.lr.low": -1.0, "workload.model": "vgg"})
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(data)
    assert [e["loc"] for e in caught.value.errors()] == [
        ("name",),
        ("space", "lr", "low"),
        ("workload", "model"),
    ]


def test_design_example_parses_from_yaml() -> None:
    spec = StudySpec.model_validate(load_spec_document(DESIGN_EXAMPLE))

    assert spec.name == "mnist1d-cnn"
    assert spec.strategy.kind == "tpe" and spec.strategy.seed == 0
    assert spec.budget.max_trials == 30 and spec.budget.parallel_trials == 4
    lr = spec.space["lr"]
    assert isinstance(lr, FloatParam) and (lr.low, lr.high, lr.log) == (1e-4, 0.3, True)
    norm = spec.space["norm"]
    assert isinstance(norm, CategoricalParam) and norm.choices[0] == "none"
    assert spec.space["momentum"].when == {"optimizer": "sgd"}
    groups = spec.space["groups"]
    assert isinstance(groups, IntParam) and groups.when == {"norm": "group"}
    assert spec.workload.model_extra == {"n_samples": 4000, "label": "y"}


def test_json_parses_the_same_as_yaml() -> None:
    from_yaml = StudySpec.model_validate(load_spec_document(DESIGN_EXAMPLE))
    text = json.dumps(from_yaml.model_dump(mode="json"))
    assert StudySpec.model_validate(load_spec_document(text)) == from_yaml


def test_a_stored_spec_validates_again_unchanged() -> None:
    spec = StudySpec.model_validate(load_spec_document(DESIGN_EXAMPLE))
    assert StudySpec.model_validate(spec.model_dump(mode="json")) == spec
    assert StudySpec.model_validate_json(spec.model_dump_json()) == spec


def test_defaults_are_filled() -> None:
    spec = StudySpec.model_validate(
        {
            "name": "defaults",
            "strategy": {"kind": "random"},
            "space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
            "workload": {"model": "mlp", "dataset": "synthetic"},
        }
    )
    assert spec.objective.metric == "val_accuracy" and spec.objective.direction == "maximize"
    assert spec.strategy.seed is None and spec.strategy.early_stopping == "none"
    assert (spec.strategy.min_epochs, spec.strategy.reduction_factor) == (1, 3)
    assert spec.strategy.n_configs is None and spec.strategy.sampler == "random"
    assert spec.budget.max_trials is None
    assert (spec.budget.parallel_trials, spec.budget.epochs) == (1, 10)
    assert spec.workload.optimizer == "adamw"
    dropout = spec.space["dropout"]
    assert isinstance(dropout, FloatParam) and dropout.log is False and dropout.step is None


def test_plugin_models_and_datasets_need_the_context() -> None:
    data = patched({"workload.model": "vit", "workload.dataset": "cifar10"})
    context = {"models": {"vit"}, "datasets": {"cifar10"}}

    spec = StudySpec.model_validate(data, context=context)

    assert (spec.workload.model, spec.workload.dataset) == ("vit", "cifar10")
    error = first_error(data, context={"models": {"other"}})
    assert error["loc"] == ("workload", "model")
    assert "the models are cnn, mlp, other, resnet" in error["msg"]


@pytest.mark.parametrize("dataset", ["npz:/data/train.npz", "idx:/data/mnist", "csv:data.csv"])
def test_file_datasets_are_accepted(dataset: str) -> None:
    assert StudySpec.model_validate(patched({"workload.dataset": dataset}))


def test_fixed_values_in_the_workload_are_kept() -> None:
    data = patched({"workload.lr": 0.01, "workload.seed": 1, "workload.optimizer": "sgd"})
    workload = StudySpec.model_validate(data).workload
    assert workload.optimizer == "sgd"
    assert workload.model_extra == {"lr": 0.01, "seed": 1}


def test_true_and_one_are_different_choices() -> None:
    spec = StudySpec.model_validate(patched({"space.flag": c(True, 1, "1")}))
    flag = spec.space["flag"]
    assert isinstance(flag, CategoricalParam)
    assert [type(v) for v in flag.choices] == [bool, int, str]


def test_conditions_may_chain_and_list_alternatives() -> None:
    data = patched(
        {
            "space.norm": c("batch", "group", "layer"),
            "space.groups": i(values=[1, 2, 4, 8], when={"norm": ["group", "layer"]}),
            "space.group_eps": f(values=[1e-5, 1e-3], when={"groups": [2, 4]}),
        }
    )
    assert StudySpec.model_validate(data).space["groups"].when == {"norm": ["group", "layer"]}


@pytest.mark.parametrize(
    ("strategy", "budget", "expected"),
    [
        ({"kind": "grid"}, {}, 6),
        ({"kind": "grid"}, {"max_trials": 4}, 4),
        ({"kind": "grid"}, {"max_trials": 100}, 6),
        # the space has 6 configurations, each tried once unless repeats are allowed
        ({"kind": "random"}, {}, 6),
        ({"kind": "random", "allow_repeats": True}, {}, DEFAULT_MAX_TRIALS),
        ({"kind": "tpe"}, {"max_trials": 50}, 6),
        ({"kind": "tpe", "allow_repeats": True}, {"max_trials": 50}, 50),
        ({"kind": "gp"}, {"max_trials": 4}, 4),
        ({"kind": "successive_halving", "n_configs": 27}, {}, 27),
        # successive halving creates exactly its n_configs trials
        ({"kind": "successive_halving", "n_configs": 9}, {"max_trials": 12}, 9),
        # hyperband over 1..10 epochs, eta 3: brackets of 9, 5 and 3 trials
        ({"kind": "hyperband"}, {}, 17),
    ],
)
def test_effective_max_trials(
    strategy: dict[str, Any], budget: dict[str, Any], expected: int
) -> None:
    data = patched(
        {
            "strategy": strategy,
            "budget": budget,
            "space": {"lr": f(values=[0.1, 0.01, 0.001]), "optimizer": c("sgd", "adamw")},
        }
    )
    assert StudySpec.model_validate(data).effective_max_trials() == expected


def test_grid_accepts_finite_floats() -> None:
    data = patched(
        {
            **GRID,
            "space.lr": f(low=1e-4, high=1e-1, log=True, grid=4),
            "space.dropout": f(low=0.0, high=0.5, step=0.1),
            "space.momentum": f(values=[0.9, 0.99], when={"optimizer": "sgd"}),
        }
    )
    assert StudySpec.model_validate(data).effective_max_trials() == 4 * 6 * (2 + 1)


# ---------------------------------------------------------------------------------------------
# Documents


def test_yaml_1_2_scalars() -> None:
    data = load_spec_document("lr: 1e-4\nsmall: -2.5E-3\nword: no\nflag: true\nn: 10\n")
    assert data == {"lr": 1e-4, "small": -2.5e-3, "word": "no", "flag": True, "n": 10}
    assert isinstance(data["n"], int)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "the spec is not valid YAML or JSON: "),
        ('{"name": "x"', "the spec is not valid YAML or JSON: "),
        ("- name: x\n", "the spec must be a mapping of fields"),
        ('"just text"', "not a str"),
        ("", "the spec is empty"),
        ("# only a comment\n", "the spec is empty"),
        ("name: a\nname: b\n", "duplicate key 'name' (line 2, column 1)"),
        ("a: &x [1, 2]\nb: *x\n", "aliases (*name) are not allowed (line 2, column 4)"),
    ],
)
def test_unreadable_documents_are_refused(text: str, message: str) -> None:
    with pytest.raises(SpecDocumentError) as caught:
        load_spec_document(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("objective", "direction"),
    [
        ({"metric": "val_loss"}, "minimize"),
        ({"metric": "train_loss"}, "minimize"),
        ({"metric": "test_error"}, "minimize"),
        ({"metric": "val_accuracy"}, "maximize"),
        ({"metric": "top1-acc"}, "maximize"),
        ({}, "maximize"),
        ({"metric": "val_loss", "direction": "maximize"}, "maximize"),
        ({"metric": "f1", "direction": "minimize"}, "minimize"),
    ],
)
def test_direction_is_inferred_from_the_metric_unless_given(
    objective: dict[str, str], direction: str
) -> None:
    spec = StudySpec.model_validate(patched({"objective": objective}))
    assert spec.objective.direction == direction
    # stored with the direction written out, so a later validation cannot infer differently
    assert spec.model_dump(mode="json")["objective"]["direction"] == direction
