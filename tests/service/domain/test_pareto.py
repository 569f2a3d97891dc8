"""The Pareto front: the indices of the points nothing dominates, read through each direction."""

from __future__ import annotations

import itertools
import random

import pytest

from service.domain.pareto import dominates, pareto_front


def brute_force(values: list[list[float]], directions: list[str]) -> list[int]:
    return [
        i
        for i, b in enumerate(values)
        if not any(dominates(a, b, directions) for j, a in enumerate(values) if j != i)
    ]


def test_maximize_accuracy_minimize_seconds() -> None:
    # (val_accuracy, train_seconds)
    values = [[0.90, 10.0], [0.95, 30.0], [0.85, 12.0], [0.97, 60.0], [0.94, 40.0]]
    # 2 is beaten by 0 (better and faster); 4 by 1 (better and faster).
    assert pareto_front(values, ["maximize", "minimize"]) == [0, 1, 3]


def test_directions_flip_the_front() -> None:
    values = [[1.0, 1.0], [2.0, 2.0], [1.0, 2.0], [2.0, 1.0]]
    assert pareto_front(values, ["minimize", "minimize"]) == [0]
    assert pareto_front(values, ["maximize", "maximize"]) == [1]
    assert pareto_front(values, ["maximize", "minimize"]) == [3]
    assert pareto_front(values, ["minimize", "maximize"]) == [2]


def test_ties_on_one_objective_keep_only_the_better_on_the_other() -> None:
    # Same accuracy: the faster one dominates; same time: the more accurate one does.
    values = [[0.9, 10.0], [0.9, 20.0], [0.8, 10.0]]
    assert pareto_front(values, ["maximize", "minimize"]) == [0]


def test_duplicates_are_all_kept() -> None:
    values = [[0.9, 10.0], [0.9, 10.0], [0.95, 20.0], [0.8, 30.0], [0.8, 30.0]]
    assert pareto_front(values, ["maximize", "minimize"]) == [0, 1, 2]


def test_three_objectives() -> None:
    # (accuracy max, seconds min, n_params min)
    values = [
        [0.90, 10.0, 1000.0],
        [0.90, 10.0, 2000.0],  # dominated by 0: same on two, worse on params
        [0.95, 50.0, 5000.0],
        [0.85, 5.0, 9000.0],
        [0.80, 20.0, 500.0],
        [0.80, 20.0, 600.0],  # dominated by 4
    ]
    assert pareto_front(values, ["maximize", "minimize", "minimize"]) == [0, 2, 3, 4]


def test_nan_points_are_never_on_the_front() -> None:
    values = [[float("nan"), 1.0], [0.5, 2.0]]
    assert pareto_front(values, ["maximize", "minimize"]) == [1]


def test_empty_and_single() -> None:
    assert pareto_front([], ["maximize", "minimize"]) == []
    assert pareto_front([[0.1, 9.0]], ["maximize", "minimize"]) == [0]


def test_equal_points_do_not_dominate_each_other() -> None:
    assert not dominates([1.0, 2.0], [1.0, 2.0], ["minimize", "minimize"])
    assert dominates([1.0, 2.0], [1.0, 3.0], ["minimize", "minimize"])
    assert not dominates([1.0, 3.0], [1.0, 2.0], ["minimize", "minimize"])


def test_agrees_with_brute_force_on_random_points() -> None:
    rng = random.Random(7)
    for n_objectives, n in itertools.product((2, 3), (1, 5, 40)):
        for directions in itertools.product(("maximize", "minimize"), repeat=n_objectives):
            # Few distinct values so ties and duplicates are common.
            values = [[float(rng.randint(0, 4)) for _ in directions] for _ in range(n)]
            assert pareto_front(values, list(directions)) == brute_force(values, list(directions))


@pytest.mark.parametrize(
    ("values", "directions", "message"),
    [
        ([[1.0, 2.0]], ["maximize", "up"], "unknown direction 'up'"),
        ([[1.0, 2.0, 3.0]], ["maximize", "minimize"], "point 0 has 3 values for 2 objectives"),
    ],
)
def test_refuses_bad_input(values: list[list[float]], directions: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pareto_front(values, directions)
