"""The worker's side of the worker protocol: the one trainer module that knows its URLs.

It is an `hpo.client.Connection` (token, retries, `ApiError`, `ServerUnreachable`), and its
answers come back as the typed shapes of `hpo.protocol`, which the server sends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hpo.client import ApiError, Connection
from hpo.protocol import (
    Assignment,
    Completion,
    Decision,
    EpochReport,
    HeartbeatResponse,
    HeldOutMetrics,
    LeaseGrant,
    ModelSaved,
    ReportBatchResponse,
    ReportOutcome,
    ReportResponse,
    TrialReport,
    TrialState,
    WorkerRegistered,
)

log = logging.getLogger("hpo.worker")


class WorkerClient(Connection):
    """A worker's calls: register, lease, heartbeat, report, checkpoints, complete, fail and
    release, each answer parsed into its hpo.protocol shape."""

    # Whether the server takes a lease ahead (`lease(..., ahead=True)`): older ones do not.
    leases_ahead = True

    def leaving(self, retry_seconds: float) -> None:
        """From now on give up on an unreachable server after at most `retry_seconds`."""
        self.retry_seconds = min(self.retry_seconds, retry_seconds)

    def register(
        self,
        name: str,
        host: str,
        pid: int,
        device: str,
        capabilities: dict[str, list[str] | int],
    ) -> WorkerRegistered:
        body = {
            "name": name,
            "host": host,
            "pid": pid,
            "device": device,
            "capabilities": capabilities,
        }
        reply = self.call("POST", "/api/v1/workers/register", body=body)
        return WorkerRegistered.model_validate(reply)

    def deregister(self, worker_id: int) -> None:
        self.call("POST", f"/api/v1/workers/{worker_id}/deregister")

    def lease(
        self, worker_id: int, count: int = 1, held: list[int] | None = None, ahead: bool = False
    ) -> list[Assignment]:
        """Up to `count` trials. `held`: the trials this worker trains now (see the server's
        LeaseRequest); a worker that leases only when idle passes []. `ahead`: leased while
        still training (never a study's last parallel slot); a server older than the field
        refuses it (422 naming it), and gets no lease ahead from this client again."""
        body: dict[str, Any] = {"count": count}
        if held is not None:
            body["held"] = held
        if ahead:
            if not self.leases_ahead:
                return []
            body["ahead"] = True
        try:
            reply = self.call("POST", f"/api/v1/workers/{worker_id}/lease", body=body)
        except ApiError as exc:
            fields = [field or "" for field, _ in exc.errors]
            if not (ahead and exc.status == 422 and _names(fields, "ahead")):
                raise
            log.warning("the server takes no lease ahead: the completion leases the next trials")
            self.leases_ahead = False
            return []
        return LeaseGrant.model_validate(reply).assignments

    def heartbeat(self, worker_id: int, leases: list[tuple[int, str]]) -> dict[int, Decision]:
        """Renews the leases; each trial's answer is `continue`, or `stop` when not ours."""
        body = {"leases": [{"trial_id": t, "token": tok} for t, tok in leases]}
        reply = self.call("POST", f"/api/v1/workers/{worker_id}/heartbeat", body=body)
        return {d.trial_id: d.decision for d in HeartbeatResponse.model_validate(reply).decisions}

    def _trial_call(self, worker_id: int, trial_id: int, action: str, body: dict) -> Any:
        path = f"/api/v1/workers/{worker_id}/trials/{trial_id}/{action}"
        return self.call("POST", path, body=body)

    def report(
        self, worker_id: int, trial_id: int, token: str, epoch: int, metrics: dict[str, float]
    ) -> Decision:
        # Not validated here: the server checks a report and names what is wrong in its 422.
        report = EpochReport.model_construct(token=token, epoch=epoch, metrics=metrics)
        reply = self._trial_call(worker_id, trial_id, "report", report.model_dump())
        return ReportResponse.model_validate(reply).decision

    def report_many(self, worker_id: int, reports: list[TrialReport]) -> list[ReportOutcome]:
        """Several trials' epoch reports in one request; each item's outcome, in order (its
        decision, or the status and detail of an item the server refused: 409 stale, 404)."""
        body = {"reports": [item.model_dump() for item in reports]}
        reply = self.call("POST", f"/api/v1/workers/{worker_id}/reports", body=body)
        return ReportBatchResponse.model_validate(reply).results

    def complete(
        self,
        worker_id: int,
        trial_id: int,
        token: str,
        lease: int = 0,
        held: list[int] | None = None,
        test_metrics: dict[str, Any] | None = None,
        reports: Sequence[TrialReport] = (),
    ) -> Completion:
        """The completed trial's state; with `lease` above 0 its `assignments` are the
        worker's next trials, leased in the same request (`held` as for `lease`).
        `test_metrics`: its final model on the held-out test split (hpo.protocol's
        HeldOutMetrics; checked here, so a bad one fails on this side). `reports`: its last
        epochs' reports (this trial's, in epoch order), recorded before it completes; when
        their answer ends it (prune, pause) the answer's state says so. A server older than
        either field refuses it (422 naming it): the reports then go through the report
        route first (an answer that ends the trial is then the completion's state, a `stop`
        a 409), and the trial completes without the test metrics."""
        body: dict[str, Any] = {"token": token, "lease": lease}
        if held is not None:
            body["held"] = held
        if test_metrics is not None:
            body["test_metrics"] = HeldOutMetrics.model_validate(test_metrics).shown()
        if reports:
            body["reports"] = [{"epoch": r.epoch, "metrics": r.metrics} for r in reports]
        try:
            reply = self._trial_call(worker_id, trial_id, "complete", body)
        except ApiError as exc:
            fields = [field or "" for field, _ in exc.errors]
            refused = [f for f in ("test_metrics", "reports") if _names(fields, f)]
            if exc.status != 422 or not refused:
                raise
            log.warning("the server does not take %s with a completion", " or ".join(refused))
            for name in refused:
                del body[name]
            if "reports" in refused:
                ended = self._report_each(worker_id, trial_id, reports)
                if ended is not None:
                    return ended
            reply = self._trial_call(worker_id, trial_id, "complete", body)
        return Completion.model_validate(reply)

    def _report_each(
        self, worker_id: int, trial_id: int, reports: Sequence[TrialReport]
    ) -> Completion | None:
        """A completion's reports, one report request each (a server that takes none with
        the completion): the trial's end when an answer ended it, else None."""
        for r in reports:
            decision = self.report(worker_id, trial_id, r.token, r.epoch, r.metrics)
            if decision is Decision.STOP:
                raise ApiError(409, f"trial {trial_id} is no longer this worker's")
            if decision.ends_training():
                state = TrialState.PRUNED if decision is Decision.PRUNE else TrialState.PAUSED
                return Completion(state=state)
        return None

    def fail(self, worker_id: int, trial_id: int, token: str, reason: str) -> None:
        self._trial_call(worker_id, trial_id, "fail", {"token": token, "reason": reason})

    def save_checkpoint(
        self, worker_id: int, trial_id: int, token: str, epoch: int, blob: bytes
    ) -> None:
        self.call(
            "PUT",
            f"/api/v1/workers/{worker_id}/trials/{trial_id}/checkpoint",
            params={"epoch": epoch},
            content=blob,
            headers={"X-Lease-Token": token, "Content-Type": "application/octet-stream"},
        )

    def save_model(self, worker_id: int, trial_id: int, token: str, blob: bytes) -> ModelSaved:
        """Upload the completed trial's model file (trainer.model_file), before completing it;
        the answer says whether the study keeps it."""
        reply = self.call(
            "PUT",
            f"/api/v1/workers/{worker_id}/trials/{trial_id}/model",
            content=blob,
            headers={"X-Lease-Token": token, "Content-Type": "application/octet-stream"},
        )
        return ModelSaved.model_validate(reply)

    def load_checkpoint(
        self, worker_id: int, trial_id: int, token: str, checkpoint_id: str
    ) -> bytes:
        path = f"/api/v1/workers/{worker_id}/trials/{trial_id}/checkpoints/{checkpoint_id}"
        return self.download(path, {"X-Lease-Token": token})

    def release(self, worker_id: int, trial_id: int, token: str) -> None:
        self._trial_call(worker_id, trial_id, "release", {"token": token})


def _names(fields: list[str], name: str) -> bool:
    """Whether a 422's fields name the body's field `name` itself (a server that does not
    know it), not one of its items (a bad value: `reports.1.epoch`) for `reports`."""
    if name == "reports":
        return name in fields
    return any(f.startswith(name) for f in fields)
