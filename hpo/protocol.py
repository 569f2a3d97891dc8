"""What the server and the worker must agree on: states, decisions and the shapes they exchange.

These are the contract values of DESIGN.md; the wire format is the enum's string value. Both
`service` and `trainer` import this module, so it stays torch-free and imports neither of them.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, model_validator


class StudyState(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in (StudyState.COMPLETED, StudyState.FAILED)

    def hands_out_work(self) -> bool:
        """Only a running study gives new or re-leased trials to workers."""
        return self is StudyState.RUNNING


class TrialState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in FINISHED_TRIAL_STATES


FINISHED_TRIAL_STATES = frozenset({TrialState.COMPLETED, TrialState.PRUNED, TrialState.FAILED})


class WorkerState(str, Enum):
    """What the server stores about a worker. `active` covers a worker that stopped sending
    heartbeats too: "stale" is not stored but read off `last_seen_at`."""

    ACTIVE = "active"
    GONE = "gone"


class Decision(str, Enum):
    """What a worker must do after reporting an epoch.

    - continue: train the next epoch.
    - prune: the search gave up on this trial; it is already recorded `pruned`.
    - pause: save a checkpoint if possible and stop; the trial is already `paused` and may be
      resumed later by any worker.
    - stop: the trial is no longer this worker's (re-leased, deleted); drop it without a word.
    """

    CONTINUE = "continue"
    PRUNE = "prune"
    PAUSE = "pause"
    STOP = "stop"

    def ends_training(self) -> bool:
        return self is not Decision.CONTINUE


# -- the shapes a worker and the server exchange (the wire format of the worker protocol) ------


class WorkerRegistered(BaseModel):
    """The answer to a worker's registration."""

    worker_id: int
    lease_seconds: float
    heartbeat_seconds: float


class Assignment(BaseModel):
    """One leased trial, with everything a worker needs to train it."""

    trial_id: int
    token: str
    study_id: int
    study_name: str
    number: int
    attempt: int
    params: dict[str, Any]
    workload: dict[str, Any]
    objective: dict[str, str] = Field(description="the study's `{metric, direction}`")
    epochs: int = Field(description="the full fidelity: the learning-rate schedule spans it")
    target_epochs: int = Field(description="train up to this epoch, then report and await")
    start_epoch: int = Field(description="epochs already trained: resume from the checkpoint")
    checkpoint_id: str | None = Field(description="download it to resume; null: start fresh")
    rung: int
    expires_at: datetime
    keep_model: bool = Field(
        False,
        description="upload the trained model file when the trial completes (the study keeps "
        "models: `keep_models` above 0); false from servers that keep none",
    )
    report_interval: float = Field(
        0.0,
        ge=0.0,
        description="seconds a worker may hold this trial's epoch reports and send them "
        "together (the answer to a report before the trial's last epoch can only be continue, "
        "or pause or stop of the whole study: no pruner reads them); 0: every report's answer "
        "matters, send each at once (servers older than this field send none)",
    )

    @property
    def metric(self) -> str:
        """The metric the study optimizes."""
        return self.objective["metric"]


class LeaseGrant(BaseModel):
    """The answer to a lease: up to the count asked for, none when there is no work now."""

    assignments: list[Assignment]


class EpochReport(BaseModel):
    """One epoch's metrics of a leased trial; reporting the same epoch again changes nothing."""

    token: str = Field(max_length=128)
    epoch: int = Field(ge=1, le=1_000_000)
    metrics: dict[str, float] = Field(max_length=256)


class FinalReport(BaseModel):
    """One of a trial's last epoch reports, sent with its completion (the token is the
    completion's): recorded exactly as `EpochReport` is, before the trial completes."""

    epoch: int = Field(ge=1, le=1_000_000)
    metrics: dict[str, float] = Field(max_length=256)


class ReportResponse(BaseModel):
    """What the worker must do after the reported epoch."""

    decision: Decision


class TrialReport(EpochReport):
    """One item of a batched report: an epoch's metrics of one of the worker's trials."""

    trial_id: int


class ReportBatch(BaseModel):
    """Epoch reports of several trials a worker holds, sent in one request."""

    reports: list[TrialReport] = Field(min_length=1, max_length=1024)


class ReportOutcome(BaseModel):
    """The answer to one item of a batch, in the item's position: its decision with status
    200, or the status and detail the single report would have answered (409 for a stale
    token, 404 for a trial that is gone) with no decision. A failed item changes nothing."""

    trial_id: int
    status: int = 200
    decision: Decision | None = None
    detail: str | None = None


class ReportBatchResponse(BaseModel):
    """One outcome per item of the batch, in the same order."""

    results: list[ReportOutcome]


class TrialDecision(BaseModel):
    trial_id: int
    decision: Decision


class HeartbeatResponse(BaseModel):
    """Each lease the heartbeat named: `continue`, or `stop` when the trial is not ours."""

    decisions: list[TrialDecision]


class HeldOutMetrics(BaseModel):
    """A completed trial's final model evaluated once on the held-out test split, sent with its
    completion: `test_accuracy` and `test_loss`, or `unavailable` saying why there is no number
    (its dataset has no test split). Stored and shown as sent (`shown()`); never used for
    selection, pruning or ordering. Optional: a worker that sends none keeps working."""

    test_accuracy: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    test_loss: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    unavailable: str | None = Field(None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_form(self) -> HeldOutMetrics:
        numbers = (self.test_accuracy, self.test_loss)
        if None not in numbers and self.unavailable is None:
            return self
        if numbers == (None, None) and self.unavailable is not None:
            return self
        raise ValueError("give test_accuracy and test_loss, or unavailable (why) alone")

    def shown(self) -> dict[str, Any]:
        """`{"test_accuracy", "test_loss"}` or `{"unavailable"}`: what is stored and shown."""
        return self.model_dump(exclude_none=True)


class ModelSaved(BaseModel):
    """The answer to a trial's model upload: whether the server kept it (a model that is not
    among the study's best `keep_models` is not stored) and why not."""

    trial_id: int
    kept: bool
    model_id: str | None = None
    detail: str | None = None


class Completion(BaseModel):
    """What a worker reads in the answer to completing a trial (the server sends the whole
    trial): its state, and the next trials when the completion asked to lease them too.

    A completion that carried `reports` (its last epochs) whose answer ended the trial
    there (a pruner's `prune`, a stopped study's `pause`) leaves the trial as that answer
    left it: `state` is then `pruned` or `paused`, not `completed`."""

    state: TrialState
    assignments: list[Assignment] = Field(default_factory=list)
