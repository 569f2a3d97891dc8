"""Which trials' model files a study keeps, and the files themselves.

A worker uploads a completed trial's model file (trainer.model_file) just before completing it.
A study keeps the files of its best `keep_models` completed trials (spec, default 3) by the
objective, ties going to the earlier trial; a multi-objective study keeps every Pareto-front
trial's (service.domain.pareto). An upload that could not be among them is answered "not kept"
and not stored; when a trial completes, the files that fell out are deleted and their trials'
`model_id` cleared; a trial that ends any other way loses the file it uploaded. Deleting the
study deletes the files (service.domain.studies).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.protocol import TrialState
from service.domain.errors import NotFound, StorageFailed
from service.domain.lease_checks import held, held_with_study, require_running
from service.domain.pareto import pareto_front
from service.storage.artifacts import ArtifactError, ArtifactStore
from service.storage.models import StudyRow, TrialRow
from service.storage.unit import Stores, Unit, reading, unit_of_work

if TYPE_CHECKING:  # the context holds the transitions, which prune through this module
    from service.domain.context import ProtocolContext

DEFAULT_KEEP = 3


@dataclass(frozen=True)
class Upload:
    """What became of an uploaded model: kept (its artifact id) or not, and why not."""

    trial_id: int
    kept: bool
    model_id: str | None = None
    detail: str | None = None


def keep_count(spec: dict[str, Any]) -> int:
    """The stored spec's `keep_models` (studies created before it existed keep the default)."""
    return int(spec.get("keep_models", DEFAULT_KEEP))


def _objectives(spec: dict[str, Any]) -> list[dict[str, Any]] | None:
    objectives: list[dict[str, Any]] | None = spec.get("objectives")
    return objectives


def best_ids(trials: Sequence[TrialRow], spec: dict[str, Any]) -> set[int]:
    """Of `trials` (completed, or about to complete with their last value), the ids whose
    models the study keeps: the best `keep_models` by the objective, ties to the lower trial
    number; with several objectives every trial on the Pareto front (when keep_models > 0).
    Trials without a finite value are never kept."""
    keep = keep_count(spec)
    if keep == 0:
        return set()
    objectives = _objectives(spec)
    if objectives is not None:
        scored = [t for t in trials if t.values is not None and len(t.values) == len(objectives)]
        front = pareto_front([t.values or [] for t in scored], [o["direction"] for o in objectives])
        return {scored[i].id for i in front}
    sign = -1.0 if spec["objective"]["direction"] == "maximize" else 1.0
    scores = [(sign * t.value, t.number, t.id) for t in trials if t.value is not None]
    return {trial_id for _score, _number, trial_id in sorted(scores)[:keep]}


def only_best(keep: int) -> str:
    if keep == 1:
        return "only the best trial's model is kept"
    return f"only the best {keep} trials' models are kept"


def why_not_kept(trial: TrialRow, study: StudyRow, completed: Sequence[TrialRow]) -> str:
    """Why a trial has no model file to download, in words for the user."""
    keep = keep_count(study.spec)
    if keep == 0:
        return f"study '{study.name}' keeps no models (keep_models: 0)"
    if trial.state is not TrialState.COMPLETED:
        return f"trial {trial.id} is {trial.state.value}: only completed trials keep a model"
    if trial.id not in best_ids(completed, study.spec):
        kept = "the Pareto-front trials' models are" if _objectives(study.spec) else None
        rule = f"only {kept} kept" if kept else only_best(keep)
        return f"{rule}; trial {trial.id} is not among them"
    return (
        f"no model was uploaded for trial {trial.id} (its worker saves none: a plugin training "
        "function, or a worker older than the server)"
    )


def prune_models(unit: Unit, study: StudyRow, trial: TrialRow, artifacts: ArtifactStore) -> None:
    """After `trial` finished: a trial that did not complete loses the model it uploaded; a
    completed one may push others' files out of the best `keep_models` (deleted after the
    commit, their `model_id` cleared). A completed trial without a model leaves the kept ones
    as they are, and is not read for: they are the fixed point of the last completion's choice
    (the best `keep_models` of a set, or its Pareto front, chosen again, is the same set), and
    only a completion adds to them."""
    if trial.state is not TrialState.COMPLETED:
        drop_model(unit, trial, artifacts)
        return
    if trial.model_id is None:
        return
    holders = [t for t in unit.trials.with_models(study.id) if t.state is TrialState.COMPLETED]
    keep = best_ids(holders, study.spec)
    for holder in holders:
        if holder.id not in keep:
            unit.later(artifacts.delete, holder.model_id)
            holder.model_id = None


def drop_model(unit: Unit, trial: TrialRow, artifacts: ArtifactStore) -> None:
    """The trial's uploaded model is deleted after the commit (it ended without completing, or
    it is handed out again: an earlier attempt's upload is not the next attempt's model)."""
    if trial.model_id is not None:
        unit.later(artifacts.delete, trial.model_id)
        trial.model_id = None


def delete_models(unit: Unit, study_id: int, artifacts: ArtifactStore) -> None:
    """Delete the study's model files after the commit (the study is being deleted)."""
    for model_id in unit.trials.model_ids(study_id):
        unit.later(artifacts.delete, model_id)


class ModelKeeping:
    """The worker's model upload and the users' download."""

    def __init__(self, context: ProtocolContext) -> None:
        self.context = context

    def save(self, trial_id: int, token: str, chunks: Iterable[bytes]) -> Upload:
        """Store the model file of the running trial `token` holds, unless it cannot be among
        the models its study keeps (then nothing is stored: `kept` false, with the reason).
        The trial's previous upload, if any, is replaced.

        Raises NotFound, StaleLease (not this lease's, or not running) or StorageFailed (the
        artifacts folder cannot take it; the trial goes on and completes without a model)."""
        artifacts = self.context.artifacts
        with reading(self.context.db) as stores:
            trial = held(stores.trials.get(trial_id), trial_id, token)
            require_running(trial)
            refusal = self._refusal(stores, trial)
        if refusal is not None:
            return Upload(trial_id, False, None, refusal)
        artifact = artifacts.new_id()
        try:
            artifacts.write(artifact, chunks)
        except ArtifactError as exc:
            raise StorageFailed(str(exc)) from exc
        try:
            with unit_of_work(self.context.db) as unit:
                _study, trial = held_with_study(
                    unit.trials.lock_for_report(trial_id), trial_id, token
                )
                require_running(trial)
                unit.later(artifacts.delete, trial.model_id)
                trial.model_id = artifact
        except Exception:
            artifacts.delete(artifact)
            raise
        return Upload(trial_id, True, artifact)

    @staticmethod
    def _refusal(stores: Stores, trial: TrialRow) -> str | None:
        """Why the running trial's model would not be kept, judged by its last value against
        the completed trials' kept models; None when it would (or cannot be told yet)."""
        study = stores.studies.get(trial.study_id)
        assert study is not None  # the foreign key
        keep = keep_count(study.spec)
        if keep == 0:
            return f"study '{study.name}' keeps no models (keep_models: 0)"
        if _objectives(study.spec) is not None or trial.value is None:
            return None  # a multi-objective trial's values arrive with its completion
        holders = [
            t for t in stores.trials.with_models(study.id) if t.state is TrialState.COMPLETED
        ]
        if trial.id in best_ids([*holders, trial], study.spec):
            return None
        return f"{only_best(keep)}; this one is not among them"

    def path(self, trial_id: int) -> tuple[Path, TrialRow, str]:
        """The kept model file of a trial, the trial and its study's name.

        Raises NotFound saying why there is none (not completed, not among the best kept,
        the study keeps none, the file is gone)."""
        with reading(self.context.db) as stores:
            trial = stores.trials.get(trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} not found")
            study = stores.studies.get(trial.study_id)
            assert study is not None
            if trial.model_id is None:
                completed = stores.trials.of_study(study.id, TrialState.COMPLETED)
                raise NotFound(why_not_kept(trial, study, completed))
            path = self.context.artifacts.path(trial.model_id)
        if not path.is_file():
            raise NotFound(f"the model of trial {trial_id} is gone from the artifacts folder")
        return path, trial, study.name
