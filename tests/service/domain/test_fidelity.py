"""Successive halving rungs and Hyperband brackets against the published numbers."""

from __future__ import annotations

import pytest

from service.domain.fidelity import (
    Rung,
    default_n_configs,
    hyperband,
    locate,
    schedule,
    successive_halving,
)


def test_successive_halving_nine_configs_eta_three() -> None:
    bracket = successive_halving(9, min_epochs=1, epochs=9, eta=3)
    assert bracket.rungs == (Rung(9, 1), Rung(3, 3), Rung(1, 9))
    assert bracket.total_epochs() == 9 * 1 + 3 * 2 + 1 * 6


def test_successive_halving_caps_the_last_rung_at_the_budget() -> None:
    bracket = successive_halving(8, min_epochs=2, epochs=10, eta=2)
    assert bracket.rungs == (Rung(8, 2), Rung(4, 4), Rung(2, 8), Rung(1, 10))


def test_default_n_configs_leaves_one_configuration_at_the_end() -> None:
    assert default_n_configs(1, 9, 3) == 9
    assert default_n_configs(1, 27, 3) == 27
    assert default_n_configs(1, 10, 2) == 16


def test_hyperband_brackets_match_the_published_table_for_27_epochs_eta_3() -> None:
    # Li et al. (2018), Table 1: R = 27 (in units of the minimum resource), eta = 3.
    table = {
        3: [(27, 1), (9, 3), (3, 9), (1, 27)],
        2: [(12, 3), (4, 9), (1, 27)],
        1: [(6, 9), (2, 27)],
        0: [(4, 27)],
    }
    brackets = hyperband(min_epochs=1, epochs=27, eta=3)
    assert [b.index for b in brackets] == [3, 2, 1, 0]
    for bracket in brackets:
        assert [(r.configs, r.epochs) for r in bracket.rungs] == table[bracket.index]
    assert sum(b.size for b in brackets) == 27 + 12 + 6 + 4


def test_trials_are_numbered_bracket_after_bracket() -> None:
    brackets = schedule("hyperband", None, 1, 27, 3)
    assert [locate(brackets, n) for n in (0, 26, 27, 38, 39, 44, 45, 48)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    with pytest.raises(ValueError, match="beyond"):
        locate(brackets, 49)


def test_hyperband_rounds_half_epochs_up() -> None:
    brackets = hyperband(min_epochs=1, epochs=20, eta=2)
    assert [r.epochs for r in brackets[0].rungs] == [1, 3, 5, 10, 20]  # 20 / 8 = 2.5 is 3
