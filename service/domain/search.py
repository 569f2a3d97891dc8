"""The bridge to Optuna: one Optuna study per service study, samplers, pruners, ask and tell.

Optuna's storage writes in its own transactions, so nothing here may run inside one of the
service's write transactions (on SQLite that would wait on our own lock). Callers commit first
and call these functions afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState as OptunaState

from hpo.protocol import TrialState
from service.domain import bohb
from service.domain.spec import MAX_GRID_POINTS, StudySpec, initial_params
from service.domain.spec.space import (
    configuration_key,
    distribution_for,
    grid_points,
    sampled_points,
    suggest_params,
)
from service.storage import locks, optuna_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)
# TPE's `group` (conditional spaces) is marked experimental; it is what define-by-run needs.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

_FINISH_STATES = {
    TrialState.COMPLETED: OptunaState.COMPLETE,
    TrialState.PRUNED: OptunaState.PRUNED,
    TrialState.FAILED: OptunaState.FAIL,
}


def trial_seed(seed: int | None, number: int) -> int | None:
    """The sampler seed for trial `number`: proposals depend on (seed, number) only, not on which
    server process asks or how many times it asked before."""
    if seed is None:
        return None
    return (seed * 1_000_003 + number * 7_919) % (2**32)


_REPEAT_RETRIES = 8
"""How many more proposals the sampler gets when it proposes a configuration already tried,
before one of the untried configurations is taken at random."""


def _reseeded(spec: StudySpec, number: int, retry: int) -> int | None:
    seed = trial_seed(spec.strategy.seed, number)
    return None if seed is None else (seed + retry * 104_729) % (2**32)


def make_sampler(spec: StudySpec, number: int, retry: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of trial `number`, seeded by (seed, number); `retry` > 0 reseeds it for
    another proposal after one that was already tried."""
    strategy = spec.strategy
    seed = _reseeded(spec, number, retry)
    kind: str = strategy.kind
    if kind in ("successive_halving", "hyperband"):
        kind = strategy.sampler
    startup = min(10, max(3, spec.effective_max_trials() // 3))
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=startup,
        )
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population(spec))
    if kind == "bohb":
        return bohb.BohbSampler(
            [rung.epochs for bracket in spec.brackets() for rung in bracket.rungs],
            seed=seed,
            random_fraction=bohb.DEFAULT_RANDOM_FRACTION
            if strategy.random_fraction is None
            else strategy.random_fraction,
            repeats=strategy.allow_repeats,
        )
    if kind == "gp":
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=startup,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
    return optuna.samplers.RandomSampler(seed=seed)


def nsga2_population(spec: StudySpec) -> int:
    """NSGA-II's generation size: a quarter of the study's trials (4 to 50), so that a study of
    20 trials sees a few generations evolve rather than one random one."""
    return max(4, min(50, spec.effective_max_trials() // 4))


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner | None:
    early = spec.strategy.early_stopping
    if early == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if early == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.strategy.min_epochs,
            reduction_factor=spec.strategy.reduction_factor,
        )
    return None


def reads_each_value(spec: StudySpec) -> bool:
    """Whether anything reads a trial's intermediate values in Optuna while the trial trains:
    the study's pruner does (its median or rungs need each reported value at once). Without
    one, reports leave Optuna alone and a trial's values reach it at the trial's end
    (`Transitions.finish`, one transaction), besides those of the epochs it pauses at (a
    rung's end, whose value the sampler learns from)."""
    return make_pruner(spec) is not None


def create_study(storage: RDBStorage, name: str, spec: StudySpec) -> int:
    """Create (or adopt, if a crash left it behind) the Optuna study, with one direction per
    objective; returns its id."""
    directions = [optuna.study.StudyDirection[o.direction.upper()] for o in spec.all_objectives]
    try:
        return storage.create_new_study(directions, study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        return storage.get_study_id_from_name(name)


def enqueue(storage: RDBStorage, name: str, spec: StudySpec, initial: list[dict[str, Any]]) -> None:
    """Warm start: queue validated configurations to run before the sampler's own, in order
    (Optuna's `enqueue_trial`: the next asks take them first). A configuration that a trial
    already has, or that is already queued, is not queued again."""
    study = optuna.Study(study_name=name, storage=storage)
    for configuration in initial:
        study.enqueue_trial(initial_params(spec.space, configuration), skip_if_exists=True)


def delete_study(storage: RDBStorage, optuna_study_id: int) -> None:
    with contextlib.suppress(KeyError):  # already gone
        storage.delete_study(optuna_study_id)


@lru_cache(maxsize=256)
def _stored(spec_json: str) -> StudySpec:
    document = json.loads(spec_json)
    workload = document["workload"]
    # Accepted once already: the model and dataset may be plugins, known to workers only, and
    # a study created before a tunable's check existed must stay readable.
    context = {"models": {workload["model"]}, "datasets": {workload["dataset"]}, "stored": True}
    return StudySpec.model_validate(document, context=context)


def stored_spec(document: dict[str, Any]) -> StudySpec:
    """The spec of an existing study, parsed once per process and version (it is immutable but
    for its budget, and a changed budget is a new cache key)."""
    return _stored(json.dumps(document, sort_keys=True))


@lru_cache(maxsize=32)
def _grid(spec_json: str) -> list[dict[str, Any]]:
    spec = _stored(spec_json)
    return grid_points(spec.space, spec.strategy.seed)


def grid_point(spec: StudySpec, number: int) -> dict[str, Any]:
    """The grid point that trial `number` trains: trial numbers index the (shuffled) grid, so
    every point is handed out exactly once however many workers ask at the same moment."""
    document = spec.model_dump(mode="json", exclude={"budget"})
    return _grid(json.dumps(document, sort_keys=True))[number]


class StudyCache:
    """One `optuna.Study` per study for the services that own `storage`, as Optuna itself runs
    distributed studies: its trial cache then reads only new and unfinished trials from the
    database, where a fresh `Study` per request would read every trial (a lease, or a median
    pruner's report, cost O(trials)). The database stays the only source of truth; this caches
    what Optuna reads from it, and lives and dies with the services that made it.

    Each `Study` reads and writes through a `SamplingStorage` (`service.storage.optuna_trials`),
    which keeps the params of the trials being asked until `ask_many` writes them together."""

    def __init__(self, storage: RDBStorage, size: int = 64) -> None:
        self.storage = storage
        self.size = size
        self._studies: OrderedDict[int, tuple[optuna.Study, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, study_id: int) -> tuple[optuna.Study, threading.Lock]:
        with self._lock:
            entry = self._studies.get(study_id)
            if entry is None:
                storage = optuna_trials.sampling_storage(self.storage)
                study = optuna.Study(study_name=name, storage=storage)
                entry = (study, threading.Lock())
                self._studies[study_id] = entry
                while len(self._studies) > self.size:
                    self._studies.popitem(last=False)
            self._studies.move_to_end(study_id)
            return entry

    def forget(self, study_id: int) -> None:
        """Drop the cached `Study` of a deleted study."""
        with self._lock:
            self._studies.pop(study_id, None)


@dataclass(frozen=True)
class AskRequest:
    """A trial to sample: our trial `number` of the study `name`, Optuna study `study_id`."""

    name: str
    study_id: int
    spec: StudySpec
    number: int


Asked = tuple[int, dict[str, Any]]
"""A sampled trial: (Optuna trial id, params)."""


def ask(
    cache: StudyCache, name: str, study_id: int, spec: StudySpec, number: int
) -> tuple[int, dict[str, Any]]:
    """Create the Optuna trial for our trial `number` in Optuna study `study_id` and choose its
    params. Returns (optuna_trial_id, params); raises what the sampler raised."""
    [outcome] = ask_many(cache, [AskRequest(name, study_id, spec, number)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def ask_many(cache: StudyCache, requests: Sequence[AskRequest]) -> list[Asked | Exception]:
    """Sample each requested trial, in order per study, as Optuna's `study.ask` and our
    `suggest_params` would one after the other (the same history, the same params), and store
    the params of a study's trials in one Optuna transaction instead of one per param.

    Returns, in `requests`' order, each trial's (Optuna trial id, params) or the exception its
    sampling raised: a failed trial's Optuna trial ends FAIL with no params, and the others
    go on."""
    outcomes: dict[int, Asked | Exception] = {}
    by_study: dict[int, list[tuple[int, AskRequest]]] = {}
    for index, request in enumerate(requests):
        by_study.setdefault(request.study_id, []).append((index, request))
    for group in by_study.values():
        outcomes.update(_ask_study(cache, group))
    return [outcomes[index] for index in range(len(requests))]


def _ask_study(
    cache: StudyCache, group: list[tuple[int, AskRequest]]
) -> dict[int, Asked | Exception]:
    """`ask_many` for the requests of one study, under its sampling lock: the new trials
    created together when the sampler will take one each, and one write of the sampled
    params at the end."""
    first = group[0][1]
    grid = first.spec.strategy.kind == "grid"
    study, lock = cache.get(first.name, first.study_id)
    sampling = study._storage
    assert isinstance(sampling, optuna_trials.SamplingStorage)
    # The sampler is the trial's own (seeded by its number): one ask at a time per study, in
    # this process (the cached Study's sampler) and across server processes (its trials).
    with lock, locks.sampling(cache.storage, first.study_id):
        try:
            return _ask_in_turn(cache.storage, study, sampling, group, grid)
        finally:
            sampling.forget()  # nothing is kept past the lease, whatever went wrong in it


def _ask_in_turn(
    storage: RDBStorage,
    study: optuna.Study,
    sampling: optuna_trials.SamplingStorage,
    group: list[tuple[int, AskRequest]],
    grid: bool,
) -> dict[int, Asked | Exception]:
    """The body of `_ask_study`, its lock held: reserve, ask each, write what was asked."""
    first = group[0][1]
    if grid or first.spec.distinct_configurations() is None:
        # One new trial per request (no repeat to retry), unless an enqueued one waits:
        # created together, in the transaction that looks for a waiting one. Grid search
        # hands out its points by trial number and takes no enqueued trial.
        waiting = not sampling.reserve(first.study_id, len(group), unless_waiting=not grid)
    else:
        waiting = optuna_trials.has_waiting_trial(storage, first.study_id)
    outcomes: dict[int, Asked | Exception] = {}
    for index, request in group:
        before = set(sampling.pending())
        outcomes[index] = _attempt(_ask_one, study, request, waiting)
        if isinstance(outcomes[index], Exception):  # nothing of it is written
            for trial_id in set(sampling.pending()) - before:
                sampling.abandon(trial_id)
    sampling.release()
    pending = set(sampling.pending())
    try:
        sampling.flush()
    except Exception as exc:  # none of the pending trials' params was written
        for index, outcome in outcomes.items():
            if not isinstance(outcome, Exception) and outcome[0] in pending:
                outcomes[index] = exc
                tell(storage, outcome[0], TrialState.FAILED, None)
    return outcomes


def _attempt(function: Any, *args: Any) -> Any:
    """`function(*args)`, or the exception it raised."""
    try:
        return function(*args)
    except Exception as exc:
        return exc


def _ask_one(study: optuna.Study, request: AskRequest, waiting: bool) -> Asked:
    spec = request.spec
    if spec.strategy.kind == "grid":
        point = grid_point(spec, request.number)
        return _fixed_trial(study._storage, request.study_id, spec, point)
    if spec.distinct_configurations() is not None:
        return _ask_untried(study, request.study_id, spec, request.number, waiting)
    study.sampler = make_sampler(spec, request.number)
    trial = _new_trial(study, waiting)
    params = suggest_params(spec.space, trial)
    _note_choice(study._storage, study.sampler, trial._trial_id)
    return trial._trial_id, params


def _new_trial(study: optuna.Study, waiting: bool) -> optuna.Trial:
    """`study.ask()`, without its look for enqueued (WAITING) trials when none waits.

    That look goes through Optuna's trial cache, which reads every unfinished trial of the
    study from the database (params, attributes, values) on each call: with T trials running,
    a lease of n new trials read n x T trials (a lease of 32 into a study with 224 running
    took 85 ms a trial on SQLite). `has_waiting_trial`, one indexed query per lease and study,
    says whether any trial waits; a study whose `initial` configurations still wait asks as
    Optuna does. Otherwise this is what `Study.ask` does after its look: the samplers' trial
    cache reset, a new trial, the sampler's `before_trial` (in `Trial`'s constructor, which
    reads the new trial from the study's `SamplingStorage`, in memory)."""
    if waiting:
        return study.ask()
    study._thread_local.cached_all_trials = None
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id))


def _note_choice(storage: BaseStorage, sampler: optuna.samplers.BaseSampler, trial_id: int) -> None:
    """Keep how BOHB made a proposal (the budget whose model it came from, or why it was random)
    in the Optuna trial's system attributes, where Optuna's dashboard shows it too."""
    if isinstance(sampler, bohb.BohbSampler) and sampler.choice is not None:
        storage.set_trial_system_attr(trial_id, bohb.CHOICE_ATTR, sampler.choice.as_attr())


def _fixed_trial(
    storage: BaseStorage, study_id: int, spec: StudySpec, params: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """A running Optuna trial with params chosen here (a grid point, an untried configuration),
    recorded with the distributions a sampler would have used (through the study's
    `SamplingStorage`, in the lease's one write of params)."""
    trial_id = storage.create_new_trial(study_id)
    for key, value in params.items():
        distribution: BaseDistribution = distribution_for(spec.space[key], value)
        storage.set_trial_param(trial_id, key, distribution.to_internal_repr(value), distribution)
    return trial_id, params


def _ask_untried(
    study: optuna.Study,
    study_id: int,
    spec: StudySpec,
    number: int,
    waiting: bool,
) -> Asked:
    """A configuration of a finite space that no trial of the study has had: the sampler's
    proposal when it is new; else (after reseeded tries) one of the untried ones at random.

    A proposal already tried ends its Optuna trial FAIL at once (marked `hpo:repeat`), which
    samplers do not learn from. The study's budget never exceeds the space's size
    (`StudySpec.effective_max_trials`), so an untried configuration always exists.
    """
    # An orphan (a lease's Optuna trial that a stopped server left, ended by the reaper) never
    # trained: its configuration is still free, else a full budget would run out of them.
    tried = {
        configuration_key(t.params)
        for t in study.get_trials(deepcopy=False)
        if optuna_trials.ORPHAN_ATTR not in t.system_attrs
    }
    sampling = study._storage  # keeps the params; a state change writes them first
    for retry in range(_REPEAT_RETRIES + 1):
        study.sampler = make_sampler(spec, number, retry)
        trial = _new_trial(study, waiting)
        params = suggest_params(spec.space, trial)
        if configuration_key(params) not in tried:
            return trial._trial_id, params
        sampling.set_trial_system_attr(trial._trial_id, "hpo:repeat", True)
        sampling.set_trial_state_values(trial._trial_id, OptunaState.FAIL)
    size = spec.distinct_configurations() or 0
    if size > MAX_GRID_POINTS:  # too many to list, and nearly all untried: draw at random
        for retry in range(64):
            study.sampler = optuna.samplers.RandomSampler(seed=_reseeded(spec, number, -retry))
            trial = _new_trial(study, waiting)
            params = suggest_params(spec.space, trial)
            if configuration_key(params) not in tried:
                return trial._trial_id, params
            sampling.set_trial_state_values(trial._trial_id, OptunaState.FAIL)
        raise ValueError("no untried configuration found in 64 random draws")
    untried = [p for p in sampled_points(spec.space) if configuration_key(p) not in tried]
    if not untried:
        raise ValueError(f"every one of the space's {len(tried)} configurations was tried")
    pick = random.Random(trial_seed(spec.strategy.seed, number)).choice(untried)
    return _fixed_trial(sampling, study_id, spec, pick)


def record_value(storage: RDBStorage, optuna_trial_id: int, epoch: int, value: float) -> None:
    """Record the objective of `epoch` without asking the pruner (a trial pausing there); a
    no-op when the Optuna trial has finished meanwhile."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(optuna_trial_id, epoch, value)


def report_values(storage: RDBStorage, values: Sequence[tuple[int, int, float]]) -> None:
    """Record the objective of each (Optuna trial id, epoch, value): several in one Optuna
    transaction (a batched report's, `optuna_trials.write_values`), else one by one as Optuna
    writes them, each skipping a duplicate. The value of an Optuna trial that finished
    meanwhile is left out."""
    if len(values) > 1 and optuna_trials.write_values(storage, values):
        return
    for optuna_trial_id, epoch, value in values:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_intermediate_value(optuna_trial_id, epoch, value)


def record_curve(
    storage: RDBStorage, optuna_trial_id: int, values: Sequence[tuple[int, float]]
) -> None:
    """Record the objective of each (epoch, value) of one trial at its end, in one Optuna
    transaction (`optuna_trials.write_curve`); a no-op when the Optuna trial has finished
    meanwhile."""
    optuna_trials.write_curve(storage, optuna_trial_id, values)


def should_prune(
    cache: StudyCache, name: str, study_id: int, spec: StudySpec, optuna_trial_id: int, value: float
) -> bool:
    """Whether the study's pruner gives up on the trial after its recorded `value`."""
    pruner = make_pruner(spec)
    if pruner is None or math.isnan(value):
        return False
    study, _lock = cache.get(name, study_id)
    return bool(pruner.prune(study, cache.storage.get_trial(optuna_trial_id)))


def tell(
    storage: RDBStorage,
    optuna_trial_id: int,
    state: TrialState,
    value: float | Sequence[float | None] | None,
) -> None:
    """Finish the Optuna trial in one storage write; a no-op if it already is (crash recovery
    may tell twice). `value` is the objective, or the list of objectives of a multi-objective
    study; a completed trial with a missing or infinite one is told FAIL. Our samplers keep no
    per-trial state, so `Study.tell`'s sampler hook has nothing to do."""
    optuna_state, values = _told(state, value)
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(optuna_trial_id, optuna_state, values)


def _told(
    state: TrialState, value: float | Sequence[float | None] | None
) -> tuple[OptunaState, list[float] | None]:
    """The Optuna state and values a trial that ended `state` with `value` is told."""
    optuna_state = _FINISH_STATES[state]
    values: list[float] | None = None
    if optuna_state == OptunaState.COMPLETE and value is not None:
        told = list(value) if isinstance(value, Sequence) else [value]
        values = [float(v) for v in told if v is not None and math.isfinite(v)]
        if len(values) != len(told):
            optuna_state, values = OptunaState.FAIL, None
    return optuna_state, values


def finish(
    storage: RDBStorage,
    optuna_trial_id: int,
    state: TrialState,
    value: float | Sequence[float | None] | None,
    curve: Sequence[tuple[int, float]] = (),
) -> None:
    """`record_curve(curve)` (when given) then `tell`, in one Optuna transaction
    (`optuna_trials.finish_trial`); a no-op for an Optuna trial that has ended. Where that one
    transaction does not apply (the trial finished or is missing, another database), the two
    calls as they are."""
    optuna_state, values = _told(state, value)
    if optuna_trials.finish_trial(storage, optuna_trial_id, optuna_state, values, curve):
        return
    if curve:
        record_curve(storage, optuna_trial_id, curve)
    tell(storage, optuna_trial_id, state, value)
