"""Request and response models of the REST API (the contract of DESIGN.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hpo.protocol import (
    Assignment,
    EpochReport,
    FinalReport,
    HeldOutMetrics,
    StudyState,
    TrialReport,
    TrialState,
)
from hpo.tunables import Tunable
from service.domain.spec import MAX_TRIALS

Number = float | None  # non-finite values are sent as null: JSON has no NaN
# Ids are INTEGER columns (32 bits on PostgreSQL): a larger number cannot name a row.
MAX_ID = 2**31 - 1


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of a parsed JSON value (iterative: any depth)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return False


class Strict(BaseModel):
    """A request body: unknown fields, values of another JSON type (`false` for a number) and
    NUL characters (which PostgreSQL text cannot hold) are refused with 422."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _raw_value(cls, value: Any, info: ValidationInfo) -> Any:
        if _has_nul(value):
            raise ValueError("text may not contain NUL characters (\\u0000)")
        wants_int = cls.model_fields[info.field_name or ""].annotation in (int, int | None)
        if wants_int and isinstance(value, float) and value.is_integer():
            return int(value)  # 3.0 is an integer to JSON Schema too
        return value


class Problem(BaseModel):
    """Every error answer: a message, or a list of `{loc, msg, type}` for invalid input."""

    detail: str | list[dict[str, Any]]


# -- studies ------------------------------------------------------------------------------


TestMetrics = Annotated[
    dict[str, float | str | None] | None,
    Field(
        description="the final model on the held-out test split, evaluated once when the "
        "trial completed and never used for selection: `{test_accuracy, test_loss}`, or "
        "`{unavailable: why}` (no test split); null when the worker sent none",
    ),
]


Values = Annotated[
    list[Number] | None,
    Field(
        description="multi-objective studies: one value per objective at the trial's last "
        "report, in the order of the spec's `objectives` (`value` is then null); else null",
    ),
]


ModelUrl = Annotated[
    str | None,
    Field(
        description="where to download the trial's kept model file (`GET`; "
        "`hpo.load_model` reads it); null when none is kept for it"
    ),
]


class BestTrial(BaseModel):
    trial_id: int
    number: int
    value: Number
    model_url: ModelUrl = None
    values: Values = None
    params: dict[str, Any]
    test_metrics: TestMetrics = None


class StudyPublic(BaseModel):
    id: int
    name: str
    state: StudyState
    reason: str | None = Field(None, description="why the study failed or is waiting")
    spec: dict[str, Any]
    counts: dict[str, int] = Field(description="number of trials in each trial state")
    best: BestTrial | list[BestTrial] | None = Field(
        description="the completed trial with the best value (null: none yet); for a study "
        "with `objectives`, a list: its Pareto set, every completed trial that no other beats "
        "on all objectives, by trial number"
    )
    max_trials: int
    created_at: datetime
    finished_at: datetime | None


class BudgetPatch(Strict):
    max_trials: int | None = Field(None, ge=1, le=MAX_TRIALS)
    parallel_trials: int | None = Field(None, ge=1, le=1024)


class StudyPatch(Strict):
    budget: BudgetPatch | None = None
    initial: list[dict[str, Any]] | None = Field(
        None,
        max_length=1000,
        description="warm start: more configurations ({param: value}) to run next, in order",
    )


class TrialPublic(BaseModel):
    id: int
    study_id: int
    number: int
    state: TrialState
    params: dict[str, Any]
    value: Number = Field(description="the objective at the trial's last report")
    values: Values = None
    epochs: int = Field(description="epochs reported so far")
    worker: str | None
    attempt: int
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    bracket: int = Field(0, description="successive halving / hyperband: the trial's bracket")
    rung: int = Field(0, description="successive halving / hyperband: the trial's rung")
    checkpoint_epoch: int = Field(
        0,
        description="epoch of the latest checkpoint (0: none), where a paused or re-leased trial "
        "resumes; it may trail `epochs` (checkpoints follow `checkpoint_seconds`)",
    )
    model_url: ModelUrl = None


class TrialPage(BaseModel):
    items: list[TrialPublic]
    next: int | None = Field(description="cursor for the next page (pass as `after`), or null")


class CurvePoint(BaseModel):
    epoch: int
    metrics: dict[str, Number]


class TrialDetail(TrialPublic):
    curve: list[CurvePoint]
    test_metrics: TestMetrics = None


# -- workers ------------------------------------------------------------------------------


class Capabilities(Strict):
    models: list[str] = Field(default_factory=list, max_length=1000)
    datasets: list[str] = Field(default_factory=list, max_length=1000)
    fuse: int = Field(
        default=1, ge=1, le=64, description="trials the worker trains at once (--fuse)"
    )
    slot: int = Field(
        default=0, ge=0, le=4095, description="its slot among its command's on its device"
    )
    slots: int = Field(
        default=1, ge=1, le=4096, description="slots (training processes) of its command there"
    )
    tunables: list[Tunable] = Field(
        default_factory=list,
        max_length=1000,
        description="what its plugin models declare they read (hpo.tunables), checked in specs",
    )


class WorkerRegister(Strict):
    name: str = Field(min_length=1, max_length=200)
    host: str = Field("", max_length=255)
    pid: int | None = Field(None, ge=0, le=2**31 - 1)
    device: str = Field("cpu", min_length=1, max_length=64)
    capabilities: Capabilities = Field(default_factory=Capabilities)


class WorkerTrial(BaseModel):
    trial_id: int
    study_id: int
    number: int
    epoch: int


class WorkerPublic(BaseModel):
    id: int
    name: str
    host: str
    device: str
    state: str
    last_seen_at: datetime
    heartbeat_age_s: float
    stale: bool
    trials: list[WorkerTrial]
    fuse: int = Field(1, description="how many trials it trains at once as one fused model")
    slot: int = Field(0, description="which of its `hpo worker` command's slots on its device")
    slots: int = Field(1, description="how many slots its command runs on its device (--slots)")


Held = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None,
    Field(
        max_length=64,
        description="the trials the worker is training now; any other trial leased to it "
        "never reached it (a lost answer) and is queued again first. Omitted: no such check",
    ),
]


class LeaseRequest(Strict):
    count: int = Field(1, ge=1, le=64)
    held: Held = None
    ahead: bool = Field(
        False,
        description="the worker is still training and leases its next trials ahead: such a "
        "lease never takes a study's last parallel_trials slot, which stays for an idle worker",
    )


class HeldOutRequest(Strict, HeldOutMetrics):
    """hpo.protocol.HeldOutMetrics, checked as strictly as every request body."""


class FinalReportRequest(Strict, FinalReport):
    """One of the reports sent with a completion (hpo.protocol.FinalReport), checked as
    strictly as every request body."""


class CompleteRequest(Strict):
    token: str = Field(max_length=128)
    lease: int = Field(
        0, ge=0, le=64, description="also lease up to this many next trials: saves a request"
    )
    held: Held = None
    test_metrics: HeldOutRequest | None = Field(
        None, description="the final model on the held-out test split (older workers: none)"
    )
    reports: list[FinalReportRequest] = Field(
        default_factory=list,
        max_length=1024,
        description="the trial's last epoch reports, in epoch order, recorded as the report "
        "route records them before the trial completes (one request instead of two); when "
        "their answer ends the trial (prune, pause) the trial is not completed and the answer "
        "says its state (older workers: none)",
    )


class CompletedTrial(TrialPublic):
    assignments: list[Assignment] = Field(
        default_factory=list, description="the next trials, when the request asked to lease"
    )


class LeaseRef(Strict):
    trial_id: int = Field(ge=0, le=MAX_ID)
    token: str = Field(max_length=128)


class HeartbeatRequest(Strict):
    leases: list[LeaseRef] = Field(default_factory=list, max_length=256)


class ReportRequest(Strict, EpochReport):
    """The report shape the worker shares (hpo.protocol), checked as strictly as every request
    body."""


class ReportItem(Strict, TrialReport):
    """One item of a batched report (hpo.protocol.TrialReport), checked as strictly."""

    trial_id: int = Field(ge=0, le=MAX_ID)


class ReportBatchRequest(Strict):
    """hpo.protocol.ReportBatch, checked as strictly as every request body."""

    reports: list[ReportItem] = Field(min_length=1, max_length=1024)


class _PlainReportItem(TrialReport):
    """`ReportItem` without `Strict`'s Python check of each raw value (for a batch of 128,
    512 calls that took 2 of its 2.4 ms of validation): refuses all it refuses and more."""

    model_config = ConfigDict(extra="forbid", strict=True)

    trial_id: int = Field(ge=0, le=MAX_ID)


class _PlainReportBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reports: list[_PlainReportItem] = Field(min_length=1, max_length=1024)


def report_batch(body: bytes) -> list[TrialReport]:
    """The items of a batched report's JSON body, as `ReportBatchRequest` takes them; raises
    its ValidationError (a 422 naming the field) for a body it refuses.

    A body without NUL characters (JSON can only carry one escaped: `\\u0000`) holds nothing
    `Strict`'s raw-value check refuses, so the bytes are validated once, in pydantic's core,
    by a model with the same fields and limits; a body that model refuses (an epoch sent as
    `3.0`, which `Strict` takes as 3, or a real error) is validated by `ReportBatchRequest`
    itself, which then decides, as it did for every body."""
    if b"\\u0000" not in body and b"\x00" not in body:
        try:
            return list(_PlainReportBatch.model_validate_json(body).reports)
        except ValidationError:
            pass
    return list(ReportBatchRequest.model_validate_json(body).reports)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` with its nested models written in place (no `$defs`), for
    a route that reads its body itself and documents it with `openapi_extra`: inside an
    OpenAPI document `#/$defs/...` would point at the document's root, where nothing is."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


class CheckpointSaved(BaseModel):
    trial_id: int
    checkpoint_id: str
    epoch: int


class TokenRequest(Strict):
    token: str = Field(max_length=128)


class FailRequest(Strict):
    token: str = Field(max_length=128)
    reason: str = Field(min_length=1, max_length=10_000)
