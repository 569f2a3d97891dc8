"""The search space: conditional sampling through Optuna, grid enumeration, distributions."""

from __future__ import annotations

import itertools
import math
import random
import time
import warnings
from typing import Any

import optuna
import pytest
from pydantic import TypeAdapter

from service.domain.spec import Param
from service.domain.spec.space import (
    distribution_for,
    grid_points,
    grid_size,
    is_active,
    ordered_params,
    param_values_for_grid,
    suggest_params,
    to_internal,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

_PARAM: TypeAdapter[Any] = TypeAdapter(Param)


def space_of(**params: dict[str, Any]) -> dict[str, Any]:
    """A space from plain dicts, each validated as a spec parameter."""
    return {name: _PARAM.validate_python(fields) for name, fields in params.items()}


def f(**fields: Any) -> dict[str, Any]:
    return {"type": "float", **fields}


def i(**fields: Any) -> dict[str, Any]:
    return {"type": "int", **fields}


def c(*choices: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices), **fields}


CONDITIONAL = space_of(
    lr=f(low=1e-4, high=0.3, log=True),
    optimizer=c("sgd", "adamw"),
    momentum=f(low=0.5, high=0.99, when={"optimizer": "sgd"}),
    nesterov=c(True, False, when={"optimizer": "sgd"}),
    norm=c("none", "batch", "layer", "group", "instance"),
    groups=i(low=1, high=8, when={"norm": "group"}),
    batch_size=c(32, 64, 128, when={"norm": ["batch", "group"]}),
)


def run_study(sampler: optuna.samplers.BaseSampler, space: dict[str, Any], n: int) -> list[Any]:
    """Ask n trials define-by-run, tell a made-up objective, return (params, frozen trial)."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    asked = []
    for _ in range(n):
        trial = study.ask()
        params = suggest_params(space, trial)
        study.tell(trial, -math.log(params["lr"]) + (params.get("optimizer") == "sgd"))
        asked.append(params)
    return list(zip(asked, study.trials, strict=True))


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda: optuna.samplers.RandomSampler(seed=1),
        lambda: optuna.samplers.TPESampler(
            multivariate=True, group=True, seed=1, n_startup_trials=8
        ),
    ],
    ids=["random", "tpe-multivariate-group"],
)
def test_conditional_params_appear_exactly_when_their_condition_holds(make_sampler: Any) -> None:
    results = run_study(make_sampler(), CONDITIONAL, 60)

    for params, frozen in results:
        sgd = params["optimizer"] == "sgd"
        assert ("momentum" in params) is sgd and ("nesterov" in params) is sgd
        assert ("groups" in params) is (params["norm"] == "group")
        assert ("batch_size" in params) is (params["norm"] in ("batch", "group"))
        assert frozen.params == params
    assert {p["optimizer"] for p, _ in results} == {"sgd", "adamw"}
    assert "group" in {p["norm"] for p, _ in results}


def test_sampled_values_respect_bounds_log_step_and_choices() -> None:
    space = space_of(
        lr=f(low=1e-5, high=1e-1, log=True),
        dropout=f(low=0.0, high=0.5, step=0.1),
        clip=f(low=0.0, high=1.0, step=0.3),
        warmup=f(values=[0.0, 0.05, 0.1]),
        layers=i(low=1, high=9, step=2),
        width=i(low=8, high=512, log=True),
        depth=i(values=[18, 34, 50]),
        norm=c("batch", "layer", True, 3),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when it has to adjust `high` to the step
        results = run_study(optuna.samplers.RandomSampler(seed=7), space, 200)

    for params, frozen in results:
        assert 1e-5 <= params["lr"] <= 1e-1 and frozen.distributions["lr"].log
        assert round(params["dropout"], 9) in {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}  # Optuna's floats
        assert 0.0 <= params["clip"] <= 0.9 + 1e-12
        assert abs(params["clip"] / 0.3 - round(params["clip"] / 0.3)) < 1e-9
        assert params["warmup"] in {0.0, 0.05, 0.1}
        assert params["layers"] in {1, 3, 5, 7, 9}
        assert 8 <= params["width"] <= 512 and type(params["width"]) is int
        assert frozen.distributions["width"].log
        assert params["depth"] in {18, 34, 50}
        assert params["norm"] in ("batch", "layer", True, 3)
    log_widths = [math.log(p["width"]) for p, _ in results]
    assert sum(w < math.log(64) for w in log_widths) > 60  # log-uniform: half below sqrt(8*512)


def test_same_seed_proposes_the_same_sequence() -> None:
    first = run_study(optuna.samplers.RandomSampler(seed=0), CONDITIONAL, 25)
    second = run_study(optuna.samplers.RandomSampler(seed=0), CONDITIONAL, 25)
    other = run_study(optuna.samplers.RandomSampler(seed=1), CONDITIONAL, 25)

    assert [p for p, _ in first] == [p for p, _ in second]
    assert [p for p, _ in first] != [p for p, _ in other]


def test_ordered_params_puts_conditions_first_and_keeps_spec_order() -> None:
    space = space_of(
        momentum=f(low=0.5, high=0.99, when={"optimizer": "sgd"}),
        lr=f(low=0.01, high=0.1),
        optimizer=c("sgd", "adamw"),
        dampening=f(values=[0.0, 0.1], when={"momentum_kind": "plain"}),
        momentum_kind=c("plain", "nesterov", when={"optimizer": "sgd"}),
    )
    names = [name for name, _ in ordered_params(space)]
    assert names == ["lr", "optimizer", "momentum", "momentum_kind", "dampening"]


def test_ordered_params_refuses_a_cycle() -> None:
    space = space_of(a=c("x", when={"b": "x"}), b=c("x", when={"a": "x"}))
    with pytest.raises(ValueError, match="form a cycle"):
        ordered_params(space)


def test_is_active() -> None:
    groups = space_of(g=i(low=1, high=8, when={"norm": ["group", "layer"], "use": True}))["g"]
    assert is_active(groups, {"norm": "group", "use": True})
    assert is_active(groups, {"norm": "layer", "use": True})
    assert not is_active(groups, {"norm": "batch", "use": True})
    assert not is_active(groups, {"norm": "group", "use": 1})  # true is not 1
    assert not is_active(groups, {"norm": "group"})  # `use` inactive
    assert is_active(space_of(x=c(1))["x"], {})


# ---------------------------------------------------------------------------------------------
# Grid


@pytest.mark.parametrize(
    ("param", "values"),
    [
        (f(low=0.0, high=1.0, grid=4), [0.0, 0.333333333333, 0.666666666667, 1.0]),
        (f(low=1e-4, high=1e-1, log=True, grid=4), [1e-4, 1e-3, 1e-2, 1e-1]),
        (f(low=0.0, high=0.5, step=0.1), [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        (f(low=0.0, high=1.0, step=0.3), [0.0, 0.3, 0.6, 0.9]),
        (f(values=[0.3, 0.1]), [0.3, 0.1]),
        (i(low=2, high=6), [2, 3, 4, 5, 6]),
        (i(low=1, high=10, step=4), [1, 5, 9]),
        (i(low=1, high=1000, log=True, grid=4), [1, 10, 100, 1000]),
        (i(low=1, high=4, grid=10), [1, 2, 3, 4]),
        (i(low=1, high=32, log=True), list(range(1, 33))),
        (c("a", 1, True), ["a", 1, True]),
    ],
)
def test_param_values_for_grid(param: dict[str, Any], values: list[Any]) -> None:
    found = param_values_for_grid("p", _PARAM.validate_python(param))
    assert found == values
    assert [type(v) for v in found] == [type(v) for v in values]


def test_a_continuous_float_has_no_grid_values() -> None:
    with pytest.raises(
        ValueError, match="grid search needs finite values for float parameter 'lr'"
    ):
        param_values_for_grid("lr", _PARAM.validate_python(f(low=0.1, high=0.2)))


GRID_SPACE = space_of(
    optimizer=c("sgd", "adamw"),
    momentum=f(values=[0.9, 0.99], when={"optimizer": "sgd"}),
    lr=f(low=1e-3, high=1e-1, log=True, grid=3),
    norm=c("batch", "group", "layer"),
    groups=i(values=[1, 2, 4, 8], when={"norm": "group"}),
    eps=f(values=[1e-5, 1e-3], when={"groups": [4, 8], "optimizer": "adamw"}),
)


def key(point: dict[str, Any]) -> frozenset[tuple[str, bool, Any]]:
    """A point as a set member that tells true from 1."""
    return frozenset((name, isinstance(v, bool), v) for name, v in point.items())


def expected_grid_points(space: dict[str, Any]) -> set[frozenset[tuple[str, bool, Any]]]:
    """Brute force: every assignment (a value or absent per parameter) in which a parameter
    is present exactly when each of its conditions names a present value."""
    absent = object()
    names = list(space)
    options = [[*param_values_for_grid(n, space[n]), absent] for n in names]
    points = set()
    for combo in itertools.product(*options):
        point = {n: v for n, v in zip(names, combo, strict=True) if v is not absent}
        if all((n in point) == _holds(space[n], point) for n in names):
            points.add(key(point))
    return points


def _holds(param: Any, point: dict[str, Any]) -> bool:
    when = param.when or {}
    return all(
        ref in point
        and any(
            point[ref] == v and isinstance(point[ref], bool) == isinstance(v, bool)
            for v in (allowed if isinstance(allowed, list) else [allowed])
        )
        for ref, allowed in when.items()
    )


def test_grid_points_cover_every_combination_once() -> None:
    points = grid_points(GRID_SPACE, seed=None)

    # 3 lr x (sgd: 2 momentum x (batch, layer, 4 groups) + adamw: batch, layer, groups 1 and 2,
    # groups 4 and 8 x 2 eps)
    assert len(points) == 3 * (2 * (1 + 1 + 4) + (1 + 1 + 2 + 2 * 2))
    assert len({key(p) for p in points}) == len(points)
    assert {key(p) for p in points} == expected_grid_points(GRID_SPACE)
    assert grid_size(GRID_SPACE) == len(points)
    for point in points:
        assert ("momentum" in point) is (point["optimizer"] == "sgd")
        assert ("groups" in point) is (point["norm"] == "group")


def random_space(rng: random.Random) -> dict[str, Any]:
    """A small random conditional space: categorical, int and float-values parameters, each
    possibly conditioned on one or two earlier ones."""
    params: dict[str, dict[str, Any]] = {}
    for k in range(rng.randint(1, 6)):
        kind = rng.choice(["cat", "int", "values"])
        if kind == "cat":
            param = c(*rng.sample(["a", "b", 1, 2, True, False], rng.randint(1, 3)))
        elif kind == "int":
            low, span = rng.randint(0, 3), rng.randint(1, 4)
            param = i(low=low, high=low + span)
            if span >= 2 and rng.random() < 0.5:
                param["step"] = 2
        else:
            param = f(values=rng.sample([0.1, 0.2, 0.5, 1.0], rng.randint(1, 3)))
        refs = [n for n in params if rng.random() < 0.5][:2]
        when = {ref: _some(rng, _grid_values(params[ref])) for ref in refs}
        params[f"p{k}"] = {**param, "when": when} if when else param
    return space_of(**params)


def _some(rng: random.Random, values: list[Any]) -> list[Any]:
    return rng.sample(values, rng.randint(1, min(2, len(values))))


def _grid_values(fields: dict[str, Any]) -> list[Any]:
    return param_values_for_grid("", _PARAM.validate_python(fields))


def test_grid_size_and_points_agree_with_brute_force_on_random_spaces() -> None:
    rng = random.Random(2024)
    for _ in range(300):
        space = random_space(rng)
        points = grid_points(space, seed=None)
        keys = {key(p) for p in points}
        assert len(keys) == len(points)
        assert keys == expected_grid_points(space)
        assert grid_size(space) == len(points)


def test_unconditional_grid_is_in_product_order() -> None:
    space = space_of(a=c("x", "y"), b=i(low=1, high=3), d=f(values=[0.5, 0.25]))
    expected = [
        {"a": a, "b": b, "d": d}
        for a, b, d in itertools.product(["x", "y"], [1, 2, 3], [0.5, 0.25])
    ]
    assert grid_points(space, seed=None) == expected


def test_grid_shuffle_is_deterministic_per_seed() -> None:
    plain = grid_points(GRID_SPACE, seed=None)
    shuffled = grid_points(GRID_SPACE, seed=3)

    assert shuffled == grid_points(GRID_SPACE, seed=3)
    assert shuffled != plain and shuffled != grid_points(GRID_SPACE, seed=4)
    assert sorted(map(repr, shuffled)) == sorted(map(repr, plain))


def test_grid_size_of_huge_spaces_is_instant() -> None:
    million = space_of(a=i(low=1, high=1000), b=f(low=0.0, high=0.999, step=0.001))
    conditional = space_of(
        optimizer=c("sgd", "adamw"),
        momentum=i(low=0, high=10**9, when={"optimizer": "sgd"}),
        lr=f(low=1e-6, high=1.0, log=True, grid=100_000),
        width=i(low=1, high=10**6, when={"optimizer": "adamw"}),
    )
    start = time.process_time()  # CPU time: a busy machine cannot stretch it
    assert grid_size(million) == 1_000_000
    assert grid_size(conditional) == (10**9 + 1 + 10**6) * 100_000
    assert time.process_time() - start < 1.0  # counted, not enumerated (10^14 points)


def test_grid_point_values_are_plain_python() -> None:
    space = space_of(
        lr=f(low=1e-4, high=1e-1, log=True, grid=5),
        width=i(low=8, high=512, log=True, grid=5),
        dropout=f(low=0.0, high=0.3, step=0.1),
    )
    for point in grid_points(space, seed=0):
        assert {type(v) for v in point.values()} <= {float, int}
        assert type(point["width"]) is int
    assert param_values_for_grid("lr", space["lr"])[1:4] == [
        0.000562341325190,
        0.00316227766017,
        0.0177827941004,
    ]


# ---------------------------------------------------------------------------------------------
# Distributions


def test_grid_points_round_trip_through_optuna_storage() -> None:
    storage = optuna.storages.InMemoryStorage()
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE])
    for point in grid_points(GRID_SPACE, seed=1):
        trial_id = storage.create_new_trial(study_id)
        for name, value in point.items():
            distribution = distribution_for(GRID_SPACE[name], value)
            storage.set_trial_param(trial_id, name, to_internal(distribution, value), distribution)
        assert storage.get_trial(trial_id).params == point


def test_distribution_for_matches_what_sampling_records() -> None:
    space = space_of(
        lr=f(low=1e-4, high=1e-1, log=True, grid=4),
        dropout=f(low=0.0, high=1.0, step=0.3),
        warmup=f(values=[0.0, 0.1]),
        layers=i(low=1, high=10, step=4),
        width=i(low=8, high=64, log=True),
        norm=c("batch", "layer"),
    )
    study = optuna.create_study()
    trial = study.ask()
    suggest_params(space, trial)
    study.tell(trial, 0.0)

    recorded = study.trials[0].distributions
    assert recorded == {name: distribution_for(param) for name, param in space.items()}


def test_distribution_for_refuses_a_value_outside() -> None:
    with pytest.raises(ValueError, match="lies outside"):
        distribution_for(space_of(x=c("a", "b"))["x"], "c")
    with pytest.raises(ValueError, match="lies outside"):
        distribution_for(space_of(x=f(low=0.0, high=1.0))["x"], 1.5)
    with pytest.raises(ValueError, match="lies outside"):
        distribution_for(space_of(x=c(1, 2))["x"], True)
