"""BOHB's proposals (Falkner, Klein and Hutter, 2018): a TPE-like density model per budget.

The sampler of `successive_halving` and `hyperband` with `sampler: bohb`. Its budgets are the
epochs at which the study's rungs end. The observations D_b of budget b are the trials with a
value at epoch b in Optuna's storage (each epoch's value is recorded there, a rung's last epoch
included, before the trial pauses), whatever bracket they belong to. One proposal:

1. with probability `random_fraction` (seeded) it is drawn at random;
2. otherwise it comes from the largest budget with |D_b| >= N_min + 2, where N_min = d + 1 for
   the d parameters modelled: the best n_l = max(N_min, q |D_b|) observations make the kernel
   density l(x), the others g(x); N_s candidates are drawn from l with its bandwidths widened by
   b_w, and the one with the largest l(x) / g(x) is proposed;
3. at random while no budget has enough observations.

A configuration is not proposed twice by the model: the best-scoring candidate that no trial
of the study has had is taken. When all N_s were tried (l(x) can be that narrow over categories),
up to three more rounds draw them with wider kernels (a category changed with probability up to
1/4, 1/2, 3/4 of the uniform's), still scored by l/g; after that the best, a repeat, is taken.
`repeats=True` (the spec's `allow_repeats`) takes the best candidate whatever it
is, as the paper's sampler does. Random proposals may repeat, as `sampler: random`'s do.

The defaults are the paper's: q = 0.15, N_s = 64, b_w = 3, a bandwidth of at least 1e-3, and
random_fraction = 1/3. The densities are products of one kernel per parameter over the space
scaled to [0, 1] (log scale where the parameter is): a Gaussian for numbers, Aitchison and
Aitken's for categories, with Scott's normal-reference bandwidth. The parameters modelled are
those every observed trial has with the same distribution; a conditional parameter missing from
some of them is drawn at random, as every parameter of a random proposal is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

DEFAULT_RANDOM_FRACTION = 1 / 3
TOP_FRACTION = 0.15  # q: the share of observations that make the good density l(x)
CANDIDATES = 64  # N_s: candidates drawn from l(x) per proposal
ROUNDS = 4  # rounds of candidates, each wider, while all were tried before (without `repeats`)
BANDWIDTH_FACTOR = 3.0  # b_w: how much wider l(x)'s kernels are when drawing candidates
MIN_BANDWIDTH = 1e-3

CHOICE_ATTR = "hpo:bohb"
"""The Optuna system attribute where a trial's proposal says how it was made (see `Choice`)."""


@dataclass(frozen=True)
class Choice:
    """How one proposal was made: by the model of `budget` from `observations` trials, or at
    random (`budget` None; `reason` says why)."""

    budget: int | None
    observations: int
    reason: str

    def as_attr(self) -> dict[str, Any]:
        return {"budget": self.budget, "observations": self.observations, "reason": self.reason}


@dataclass(frozen=True)
class _Axis:
    """One parameter as a coordinate: [0, 1] for a number, the choice's index for a category."""

    name: str
    distribution: BaseDistribution

    @property
    def categories(self) -> int:
        """How many choices a categorical parameter has; 0 for a number."""
        if isinstance(self.distribution, CategoricalDistribution):
            return len(self.distribution.choices)
        return 0

    def _bounds(self) -> tuple[float, float, bool]:
        d: Any = self.distribution
        low, high = float(d.low), float(d.high)
        return (math.log(low), math.log(high), True) if d.log else (low, high, False)

    def encode(self, value: Any) -> float:
        internal = self.distribution.to_internal_repr(value)
        if self.categories:
            return float(internal)
        low, high, log = self._bounds()
        x = math.log(internal) if log else float(internal)
        return 0.5 if high == low else (x - low) / (high - low)

    def decode(self, x: float) -> Any:
        d: Any = self.distribution
        if self.categories:
            return d.choices[int(x)]
        low, high, log = self._bounds()
        value = low + min(max(x, 0.0), 1.0) * (high - low)
        value = math.exp(value) if log else value
        step = getattr(d, "step", None)
        if step is not None:  # an int (step 1 by default) or a float with a step
            value = d.low + round((value - d.low) / step) * step
        value = min(max(value, d.low), d.high)
        return round(value) if isinstance(d, optuna.distributions.IntDistribution) else value


class _Density:
    """A product-kernel density over observed points (rows of `points`, one column per axis)."""

    def __init__(self, points: np.ndarray, categories: Sequence[int]) -> None:
        n, d = points.shape
        self.points, self.categories = points, list(categories)
        scott = n ** (-1.0 / (4 + d))
        widths = []
        for j, c in enumerate(self.categories):
            column = points[:, j]
            if c:  # a categorical spread: 0 when all agree, up to sqrt((c - 1) / c)
                shares = np.bincount(column.astype(int), minlength=c) / n
                spread = math.sqrt(max(0.0, 1.0 - float(np.sum(shares**2))))
            else:
                spread = float(np.std(column))
            width = max(MIN_BANDWIDTH, 1.06 * spread * scott)
            widths.append(min(width, (c - 1) / c) if c else width)
        self.widths = np.array(widths)

    def log_pdf(self, xs: np.ndarray) -> np.ndarray:
        """log density at each row of `xs`."""
        log_kernels = np.zeros((xs.shape[0], self.points.shape[0]))
        for j, c in enumerate(self.categories):
            h = float(self.widths[j])
            if c == 1:
                continue
            if c:
                same = xs[:, j, None] == self.points[None, :, j]
                log_kernels += np.where(same, math.log(1.0 - h), math.log(h / (c - 1)))
            else:
                z = (xs[:, j, None] - self.points[None, :, j]) / h
                log_kernels += -0.5 * z**2 - math.log(h * math.sqrt(2 * math.pi))
        top = log_kernels.max(axis=1, keepdims=True)
        total = np.log(np.exp(log_kernels - top).sum(axis=1)) + top[:, 0]
        return total - math.log(self.points.shape[0])

    def sample(self, rng: np.random.Generator, widen: float, spread: float = 0.0) -> np.ndarray:
        """One point: an observed point, each coordinate moved by its kernel (numbers with the
        bandwidth times `widen`, kept inside [0, 1]; a category kept with probability 1 - h,
        else drawn uniformly, h at least `spread` times its largest, (c - 1) / c)."""
        x = self.points[rng.integers(self.points.shape[0])].copy()
        for j, c in enumerate(self.categories):
            h = float(self.widths[j])
            if c:
                h = max(h, spread * (c - 1) / c)
                if rng.random() >= 1.0 - h:
                    x[j] = rng.integers(c)
                continue
            for _ in range(100):
                moved = rng.normal(x[j], h * widen)
                if 0.0 <= moved <= 1.0:
                    break
            x[j] = min(max(moved, 0.0), 1.0)
        return x


class BohbSampler(optuna.samplers.BaseSampler):
    """BOHB's model-based proposals over `budgets` (the rung-end epochs); see the module.

    Seeded by `seed`: the same seed and the same trials (params and values) in the study give
    the same proposal. `choice` tells how the latest proposal was made. `repeats` lets the
    model propose a configuration that a trial of the study already has."""

    def __init__(
        self,
        budgets: Sequence[int],
        seed: int | None = None,
        random_fraction: float = DEFAULT_RANDOM_FRACTION,
        repeats: bool = False,
    ) -> None:
        if not budgets:
            raise ValueError("BOHB needs at least one budget")
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction must lie in [0, 1], not {random_fraction}")
        self.budgets = sorted(set(budgets))
        self.random_fraction = random_fraction
        self.repeats = repeats
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.choice: Choice | None = None

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The parameters that every trial with a value at some budget has, with one
        distribution among them all."""
        space: dict[str, BaseDistribution] | None = None
        for other in _observed(study, trial, self.budgets):
            if space is None:
                space = dict(other.distributions)
                continue
            space = {
                name: dist for name, dist in space.items() if other.distributions.get(name) == dist
            }
        return dict(sorted((space or {}).items()))

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        draw = self._rng.random()  # drawn for every proposal, so the seed's sequence is fixed
        if len(study.directions) != 1:
            return self._at_random(0, "BOHB models one objective")
        if draw < self.random_fraction:
            return self._at_random(0, "the random fraction")
        if not search_space:
            return self._at_random(0, "no observations yet")
        axes = [_Axis(name, dist) for name, dist in search_space.items()]
        n_min = len(axes) + 1
        observed = list(_observed(study, trial, self.budgets))
        for budget in reversed(self.budgets):
            ranked = _ranked(observed, axes, budget, study.direction)
            if len(ranked) >= n_min + 2:
                break
        else:
            return self._at_random(len(ranked), "too few observations at every budget")
        n_good = max(n_min, int(TOP_FRACTION * len(ranked)))
        points = np.array(ranked)
        categories = [axis.categories for axis in axes]
        good = _Density(points[:n_good], categories)
        bad = _Density(points[n_good:], categories)
        tried = set() if self.repeats else {_key(axes, t.params) for t in _others(study, trial)}
        for wider in range(1 if self.repeats else ROUNDS):
            proposals = self._candidates(good, bad, axes, wider)
            untried = [p for p in proposals if _key(axes, p) not in tried]
            if untried:
                self.choice = Choice(budget, len(ranked), "the model of the largest budget")
                return untried[0]
        self.choice = Choice(budget, len(ranked), "the model (every candidate was tried)")
        return proposals[0]

    def _candidates(
        self, good: _Density, bad: _Density, axes: Sequence[_Axis], wider: int = 0
    ) -> list[dict[str, Any]]:
        """N_s candidates drawn from l(x) (with kernels `wider` rounds wider), as params, the
        largest l(x) / g(x) first."""
        widen, spread = BANDWIDTH_FACTOR * (1 + wider), wider / ROUNDS
        xs = np.array([good.sample(self._rng, widen, spread) for _ in range(CANDIDATES)])
        order = np.argsort(-(good.log_pdf(xs) - bad.log_pdf(xs)), kind="stable")
        return [
            {axis.name: axis.decode(float(v)) for axis, v in zip(axes, xs[i], strict=True)}
            for i in order
        ]

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _at_random(self, observations: int, reason: str) -> dict[str, Any]:
        self.choice = Choice(None, observations, reason)
        return {}


def _others(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """The study's trials but `trial`, in number order."""
    trials = study.get_trials(deepcopy=False)
    return sorted((t for t in trials if t.number != trial.number), key=lambda t: t.number)


def _observed(study: optuna.Study, trial: FrozenTrial, budgets: Sequence[int]) -> list[FrozenTrial]:
    """The study's other trials that have a value at one of the budgets, in number order."""
    wanted = set(budgets)
    return [t for t in _others(study, trial) if wanted.intersection(t.intermediate_values)]


def _key(axes: Sequence[_Axis], params: dict[str, Any]) -> tuple[Any, ...]:
    """A configuration's values of the modelled parameters (None where it has none)."""
    return tuple(params.get(axis.name) for axis in axes)


def _ranked(
    trials: Sequence[FrozenTrial], axes: Sequence[_Axis], budget: int, direction: StudyDirection
) -> list[list[float]]:
    """The coordinates of the trials with a value at `budget`, best first (a value that is not
    a finite number counts as the worst; ties go by trial number)."""
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    rows = []
    for t in trials:
        value = t.intermediate_values.get(budget)
        if value is None or not all(axis.name in t.params for axis in axes):
            continue
        loss = sign * value if math.isfinite(value) else math.inf
        rows.append((loss, t.number, [axis.encode(t.params[axis.name]) for axis in axes]))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [coordinates for _loss, _number, coordinates in rows]
