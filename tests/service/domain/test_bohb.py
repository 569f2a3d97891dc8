"""BOHB's sampler on known histories: one density model per budget, proposals from the largest
budget with enough observations, a seeded fraction of random proposals (issue 13, item 2)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from service.domain.bohb import BohbSampler, Choice

SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(0.0, 1.0),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "width": IntDistribution(8, 64, step=8),
    "norm": CategoricalDistribution(["none", "batch", "layer"]),
}
BUDGETS = [1, 3, 9]


def _params(i: int, good: bool) -> dict[str, object]:
    """A configuration near the good corner (x ~ 0.85, lr ~ 3e-2, width 56, layer) or the bad
    one (x ~ 0.15, lr ~ 3e-4, width 16, none), spread a little by i."""
    jitter = (i % 5) * 0.02
    if good:
        return {"x": 0.8 + jitter, "lr": 2e-2 + jitter / 10, "width": 56, "norm": "layer"}
    return {"x": 0.1 + jitter, "lr": 2e-4 + jitter / 1000, "width": 16, "norm": "none"}


def _history(at_budget_3: int, at_budget_9: int = 2) -> optuna.Study:
    """20 trials with a value at epoch 1, where the 'bad' corner leads; the first `at_budget_3`
    of them also reached epoch 3, where the 'good' corner leads (the ranking flips, as a
    learning rate that starts slow and ends best does); `at_budget_9` reached epoch 9."""
    study = optuna.create_study(direction="maximize")
    for i in range(20):
        good = i % 2 == 0
        values = {1: 0.6 if good else 0.7 + i / 1000}
        if i < at_budget_3:
            values[3] = 0.9 + i / 1000 if good else 0.65
        if i < at_budget_9:
            values[9] = 0.95
        study.add_trial(
            optuna.trial.create_trial(
                params=_params(i, good),
                distributions=SPACE,
                intermediate_values=values,
                state=optuna.trial.TrialState.PRUNED,
            )
        )
    return study


def _propose(
    study: optuna.Study, seed: int, random_fraction: float = 0.0
) -> tuple[dict[str, Any], Choice]:
    sampler = BohbSampler(BUDGETS, seed=seed, random_fraction=random_fraction)
    study.sampler = sampler
    trial = study.ask(SPACE)
    params, choice = trial.params, sampler.choice
    assert choice is not None
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # no value: the history stays as it was
    return params, choice


def test_proposals_come_from_the_largest_budget_with_enough_observations() -> None:
    # 4 parameters: N_min = 5, so a budget needs 7 observations; epoch 9 has 2, epoch 3 has 12
    study = _history(at_budget_3=12)
    proposals = [_propose(study, seed) for seed in range(20)]
    assert {(c.budget, c.observations) for _p, c in proposals} == {(3, 12)}
    # epoch 3's model, where the good corner leads (epoch 1's model would pick the bad one)
    layer = [p for p, _c in proposals if p["norm"] == "layer"]
    assert len(layer) >= 16
    assert sum(p["x"] > 0.5 and p["lr"] > 3e-3 and p["width"] >= 40 for p, _c in proposals) >= 16
    for params, _choice in proposals:  # the values are the space's own: on the width's step
        assert params["width"] in range(8, 65, 8) and 1e-4 <= params["lr"] <= 1e-1


def test_a_budget_with_too_few_observations_is_passed_over() -> None:
    study = _history(at_budget_3=6)  # 6 < 7 at epoch 3: epoch 1's model, 20 observations
    proposals = [_propose(study, seed) for seed in range(20)]
    assert {(c.budget, c.observations) for _p, c in proposals} == {(1, 20)}
    assert sum(p["norm"] == "none" and p["x"] < 0.5 for p, _c in proposals) >= 16


def test_no_budget_with_enough_observations_means_random_proposals() -> None:
    study = optuna.create_study(direction="maximize")
    for i in range(6):
        study.add_trial(
            optuna.trial.create_trial(
                params=_params(i, True),
                distributions=SPACE,
                intermediate_values={1: 0.5},
                state=optuna.trial.TrialState.PRUNED,
            )
        )
    _, choice = _propose(study, seed=0)
    assert choice.budget is None and choice.reason == "too few observations at every budget"


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1 / 3, 1.0])
def test_the_random_fraction_is_respected_over_many_proposals(fraction: float) -> None:
    study = _history(at_budget_3=12)
    choices = [_propose(study, seed, fraction)[1] for seed in range(300)]
    random = sum(c.budget is None for c in choices)
    assert all(c.reason == "the random fraction" for c in choices if c.budget is None)
    # binomial(300, fraction): within 4 standard deviations (at most 33)
    assert abs(random - 300 * fraction) <= 4 * (300 * fraction * (1 - fraction)) ** 0.5
    if fraction == 1 / 3:
        assert 70 <= random <= 130


def test_the_same_seed_and_history_give_the_same_proposal() -> None:
    first = [_propose(_history(at_budget_3=12), seed, 1 / 3) for seed in range(8)]
    again = [_propose(_history(at_budget_3=12), seed, 1 / 3) for seed in range(8)]
    assert first == again
    assert len({str(p) for p, _c in first}) == 8  # and another seed another one


def test_the_seeds_sequence_does_not_depend_on_the_random_draw() -> None:
    """A random proposal and a model's use the same number of draws before the decision, so
    the decision for one seed is the same whatever the history (needed for a fixed fraction)."""
    rich, poor = _history(at_budget_3=12), optuna.create_study(direction="maximize")
    for seed in range(30):
        _p, in_rich = _propose(rich, seed, 0.5)
        _q, in_poor = _propose(poor, seed, 0.5)
        fraction = "the random fraction"
        assert (in_rich.reason == fraction) == (in_poor.reason == fraction)


CATEGORIES: dict[str, BaseDistribution] = {
    "norm": CategoricalDistribution(["none", "batch", "layer"]),
    "batch_size": CategoricalDistribution([32, 64, 128]),
}


GOOD = {"norm": "layer", "batch_size": 32}


def _two_configurations() -> optuna.Study:
    """12 trials of a 9-configuration space at epoch 1: (layer, 32) six times, well ahead of
    (none, 128) six times; the model's best candidate is then a configuration already tried."""
    study = optuna.create_study(direction="maximize")
    for i in range(12):
        good = i % 2 == 1
        params = GOOD if good else {"norm": "none", "batch_size": 128}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=CATEGORIES,
                intermediate_values={1: 0.9 if good else 0.5},
                state=optuna.trial.TrialState.PRUNED,
            )
        )
    return study


@pytest.mark.parametrize("repeats", [False, True])
def test_the_model_proposes_an_untried_configuration_unless_repeats_are_allowed(
    repeats: bool,
) -> None:
    proposals = []
    for seed in range(20):
        study = _two_configurations()
        study.sampler = sampler = BohbSampler([1], seed=seed, random_fraction=0.0, repeats=repeats)
        trial = study.ask(CATEGORIES)
        assert sampler.choice is not None and sampler.choice.budget == 1
        proposals.append((trial.params["norm"], trial.params["batch_size"]))
    tried = {("layer", 32), ("none", 128)}
    if repeats:  # the paper's sampler: the best l/g, which is the good configuration itself
        assert proposals.count(("layer", 32)) >= 16
    else:  # the best untried: next to the good one in one parameter
        assert not tried.intersection(proposals)
        assert sum(p[0] == "layer" or p[1] == 32 for p in proposals) >= 16
