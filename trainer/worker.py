"""`hpo worker`: one long-lived training process per device, pulling trials from the server.

Each process registers as a worker, leases a trial, trains it with `trainer.train.train`,
reporting every epoch (the answer may be continue / prune / pause / stop), and completes or
fails it. A heartbeat thread renews the lease while an epoch runs, so epochs longer than the
lease never lose a healthy trial. SIGTERM (or Ctrl-C) ends the current epoch, gives the trial
back to the server (it is queued again, not lost) and exits; a second signal exits at once.

The device waits for the server as little as it can: while a trial's last epoch trains, the
next trial (or group of `--fuse` trials) is leased ahead in the background, and a trained
trial's model upload and completion go to a background sender (trainer.finishing) while the
next one starts. When the lease ahead brings nothing (a study's `parallel_trials` counts the
trial still training), the completion asks for the next trials instead, and the worker waits
for its answer, as it did before.

The process stays up between trials, so interpreter, PyTorch and dataset start-up are paid once.
trainer.processes starts such processes (slots) per device and handles their signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hpo.client import ApiError, ServerUnreachable
from hpo.protocol import Assignment, Decision, TrialReport
from trainer import plugins
from trainer.client import WorkerClient
from trainer.finishing import Sender
from trainer.hygiene import MemoryWatch
from trainer.reporting import ReportBatcher, TrialReports

log = logging.getLogger("hpo.worker")
LEAVING_RETRY_SECONDS = 3.0
# How long before the last epoch's expected end the next trials are leased: enough for a lease's
# round trip on a busy server, short enough that a trial leased ahead seldom waits for long (the
# last trials of a study are then not held by one worker while another has run out of work).
LEASE_AHEAD_SECONDS = 0.25
# After a lease ahead that brought nothing, the next this many trials (or groups) are leased
# with their completion only: a study whose parallel_trials equals its workers refuses every
# lease ahead, which would otherwise cost a request per trial for nothing.
AHEAD_BACKOFF = 8
T = TypeVar("T")


@dataclass
class Lease:
    """The trial this process trains right now, shared with the heartbeat thread."""

    trial_id: int
    token: str
    lost: threading.Event = field(default_factory=threading.Event)
    # Its reports on their way (held while their answers cannot change its course).
    outbox: TrialReports | None = None
    # The lease's last epoch: its report is never held. When it ends the trial's budget (a
    # completion follows), it travels with the completion: `with_completion`.
    last_epoch: int = 0
    with_completion: bool = False
    # The epoch whose checkpoint was uploaded last: its report is sent at once, so that a
    # checkpoint is never ahead of the recorded curve (a crash resumes from it).
    checkpointed: int = 0
    # How many trials train with it (a fused group's size): the next lease ahead counts them
    # against the process's max_trials.
    group: int = 1
    # Set once its completion is with the sender, which lets go of the lease when answered.
    sending: bool = False


class DeviceWorker:
    def __init__(
        self,
        client: WorkerClient,
        device: str,
        name: str | None = None,
        poll_seconds: float = 1.0,
        max_trials: int | None = None,
        memory: MemoryWatch | None = None,
        fuse: int = 1,
        slot: int = 0,
        slots: int = 1,
    ) -> None:
        self.client = client
        self.device = device
        self.max_trials = max_trials
        self.memory = memory or MemoryWatch(device)
        self.trials_run = 0
        # Set when this process should end and a fresh one take over (memory hygiene).
        self.recycle = False
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}/{device}"
        # Slot `slot` of the `slots` training processes of its `hpo worker` command on this
        # device (trainer.processes); each registers as a worker of its own.
        self.slot, self.slots = slot, slots
        self.where = f"{device}#{slot}" if slots > 1 else device
        self.poll_seconds = poll_seconds
        self.shutdown = threading.Event()
        self.worker_id = 0
        self.heartbeat_seconds = 10.0
        # Up to `fuse` leased trials train at once as one fused model (trainer.fused).
        self.fuse = fuse
        # Every lease the heartbeat renews: the trials training, and those whose completion is
        # on its way (the sender's), until it is answered.
        self._held: dict[int, Lease] = {}
        self._lock = threading.Lock()
        # The trials' ends, sent in the background in order (trainer.finishing).
        self.finishing = Sender()
        # The next trials, leased while the current trial's (or group's) last epoch trains:
        # the request on its way, and the leases it brought, renewed until they start.
        self._ahead: Future[list[Assignment] | None] | None = None
        self._ahead_cancel = threading.Event()
        self._ahead_leases: list[Lease] = []
        self._ahead_skips = 0  # leases ahead still to skip after a refused one
        self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="hpo-lease-ahead")
        # Every trial's epoch reports (a fused group's members report at once) go through
        # one batcher: what is ready together leaves in one request.
        self.reports = ReportBatcher(
            lambda r: self.client.report(self.worker_id, r.trial_id, r.token, r.epoch, r.metrics),
            lambda items: self.client.report_many(self.worker_id, items),
        )

    # -- life cycle -------------------------------------------------------------------------

    def register(self) -> None:
        reply = self.client.register(
            self.name,
            self.host,
            os.getpid(),
            self.device,
            capabilities={
                **plugins.discover().capabilities(),
                "fuse": self.fuse,
                "slot": self.slot,
                "slots": self.slots,
            },
        )
        self.worker_id = reply.worker_id
        self.heartbeat_seconds = reply.heartbeat_seconds
        log.info(
            "worker %s registered with %s as #%d", self.name, self.client.server, self.worker_id
        )

    def run(self) -> None:
        """Lease and train until shut down."""
        self.register()  # first: a wrong token or server is said at once
        self.warm_up()
        beat = threading.Thread(target=self._heartbeat_loop, name="hpo-heartbeat", daemon=True)
        beat.start()
        idle = self.poll_seconds
        # Trials leased ahead or with the last completion, not yet started.
        upcoming: list[Assignment] = []
        try:
            while not self.shutdown.is_set():
                self.finishing.check()  # a server that went away while a trial ended
                assignments, upcoming = upcoming or self._lease(), []
                if not assignments and self.finishing.busy:
                    # The trials still completing may be what the study's parallel_trials
                    # counts: ask again once they are answered, without waiting idle.
                    self.finishing.drain()
                    continue
                if not assignments:
                    self.shutdown.wait(idle)
                    idle = min(idle * 1.5, 5 * self.poll_seconds)
                    continue
                idle = self.poll_seconds
                if len(assignments) > 1:
                    from trainer.fused.serving import GroupRunner

                    upcoming = GroupRunner(self, self.fuse).run(assignments)
                else:
                    upcoming = self.run_trial(assignments[0], lease_next=self.takes_more())
                    self.trials_run += 1
                if self._wants_fresh_process():
                    self.recycle = True
                    break
        except ServerUnreachable:
            self.client.leaving(0.0)  # it is gone: each call on the way out tries once
            raise
        finally:
            self.shutdown.set()
            self._leaving()
            # The trials' ends still on their way go first (each call bounded by the leaving
            # retry window), then what was leased and not started is given back.
            self.finishing.drain()
            self.give_back(upcoming + (self.take_ahead() or []))
            with contextlib.suppress(ApiError, ServerUnreachable):
                self.client.deregister(self.worker_id)
            log.info("worker %s stopped", self.name)

    def warm_up(self) -> None:
        """PyTorch's one-time start-up is paid here, before the worker asks for work, so that
        no trial (and no lease) waits on it."""
        from trainer.train import TrainingError, warm_up

        started = time.monotonic()
        try:
            warm_up(self.device)
        except TrainingError as exc:  # each trial will fail with the same reason
            log.warning("warm-up on %s failed: %s", self.device, exc)
            return
        log.info("%s warmed up in %.1f s", self.device, time.monotonic() - started)

    def stop(self) -> None:
        """Finish the current epoch, hand the trial back and leave (SIGTERM). From now on an
        unreachable server is given up on within seconds, calls already retrying included:
        a worker that waited out the full retry window for a server that is gone would take a
        minute to stop, and the server reaps its leases anyway."""
        self.shutdown.set()
        self._leaving()

    def _leaving(self) -> None:
        """A worker on its way out tries the server briefly: if it is gone too, the lease
        expires and the trial is handed out again all the same."""
        self.client.leaving(LEAVING_RETRY_SECONDS)

    def takes_more(self, training: int = 1) -> bool:
        """Whether this process will train another trial after the `training` current ones."""
        if self.shutdown.is_set():
            return False
        return self.max_trials is None or self.trials_run + training < self.max_trials

    def give_back(self, assignments: list[Assignment]) -> None:
        """Release trials leased ahead or with a completion that this process will not train
        after all (it is shutting down, or starting afresh): they are queued again at once."""
        for a in assignments:
            with contextlib.suppress(ApiError, ServerUnreachable):
                self.client.release(self.worker_id, a.trial_id, a.token)

    def _wants_fresh_process(self) -> bool:
        if self.max_trials is not None and self.trials_run >= self.max_trials:
            log.info("%d trials in this process: starting a fresh one", self.trials_run)
            return True
        if self.memory.needs_fresh_process():
            log.warning(
                "the last trial left %.0f MiB on %s: starting a fresh process to free it",
                self.memory.leaked() / 2**20,
                self.device,
            )
            return True
        return False

    def _lease(self) -> list[Assignment]:
        try:
            # Between trials a worker holds only those still completing: any other trial
            # leased to it came in a lost answer.
            return self.client.lease(self.worker_id, count=self.fuse, held=self.held_ids())
        except ApiError as exc:
            if exc.status == 404:  # the server forgot us (database reset): register again
                self.register()
                return []
            raise

    def _heartbeat_loop(self) -> None:
        while not self.shutdown.wait(self.heartbeat_seconds):
            with self._lock:
                held = {lease.trial_id: lease for lease in self._ahead_leases}
                held.update(self._held)
            try:
                leases = [(lease.trial_id, lease.token) for lease in held.values()]
                decisions = self.client.heartbeat(self.worker_id, leases)
            except (ApiError, ServerUnreachable) as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            for lease in held.values():
                if decisions.get(lease.trial_id) is Decision.STOP:
                    lease.lost.set()

    def hold(self, leases: list[Lease]) -> None:
        """Renew these leases with every heartbeat until `release_held` (a fused group's)."""
        with self._lock:
            self._held.update((lease.trial_id, lease) for lease in leases)

    def release_held(self, leases: list[Lease]) -> None:
        with self._lock:
            for lease in leases:
                if self._held.get(lease.trial_id) is lease:
                    del self._held[lease.trial_id]

    def held_ids(self) -> list[int]:
        """The trials this worker holds: training, or completing in the background."""
        with self._lock:
            return sorted(self._held)

    # -- the next trials, leased ahead ------------------------------------------------------

    def lease_ahead(self, lease: Lease, epoch_seconds: float = 0.0) -> None:
        """Lease the next trials (up to `fuse`) in the background while `lease`'s last epoch
        trains, `LEASE_AHEAD_SECONDS` before it is expected to end (it takes about
        `epoch_seconds`, as the one before it did), so that they are there when training
        ends; at most one such request until `take_ahead`. Nothing when the worker is leaving
        or takes no more trials."""
        with self._lock:
            if self._ahead is not None or self.shutdown.is_set():
                return
            if not self.takes_more(lease.group):
                return
            if self._ahead_skips > 0:
                self._ahead_skips -= 1
                return
            self._ahead_cancel = cancel = threading.Event()
            delay = max(0.0, epoch_seconds - LEASE_AHEAD_SECONDS)
            self._ahead = self._ahead_pool.submit(self._lease_ahead, delay, cancel)

    def _lease_ahead(self, delay: float, cancel: threading.Event) -> list[Assignment] | None:
        """The trials leased ahead; None when it was not asked after all."""
        if (delay > 0 and cancel.wait(delay)) or self.shutdown.is_set():
            return None  # training ended before it was time to ask: the completion leases
        try:
            # The trials training and completing, read now: not lost answers.
            got = self.client.lease(
                self.worker_id, count=self.fuse, held=self.held_ids(), ahead=True
            )
        except (ApiError, ServerUnreachable) as exc:  # the lease after training says it again
            log.warning("leasing ahead failed: %s", exc)
            return []
        with self._lock:
            self._ahead_leases = [Lease(a.trial_id, a.token) for a in got]
        return got

    def take_ahead(self) -> list[Assignment] | None:
        """The trials leased ahead, waiting for the request still on its way; [] when it
        brought none (a study's parallel_trials or max_trials refused them), None when none
        was asked. From now on they are the caller's to train or give back."""
        with self._lock:
            future, self._ahead = self._ahead, None
            self._ahead_cancel.set()  # still waiting to ask: it will not
        if future is None:
            return None
        got = future.result()
        with self._lock:
            self._ahead_leases = []
            if got == []:  # asked and refused (or failed): the next few are not asked
                self._ahead_skips = AHEAD_BACKOFF
        return got or []

    def answer(self, completion: Future[list[Assignment]] | None) -> list[Assignment]:
        """The trials a completion leased (waiting for its answer); [] when it brought none or
        failed (the sender said why)."""
        if completion is None:
            return []
        try:
            return completion.result()
        except Exception:  # ServerUnreachable: the main loop hears it from the sender
            return []

    # -- one trial --------------------------------------------------------------------------

    def lease_for(self, assignment: Assignment) -> Lease:
        """The lease of an assignment about to train, with its reports' outbox, held (renewed
        by the heartbeat, and named as held in every lease request, so that no lease ahead
        takes it for a lost answer) until its end is said (`release_held`, or the sender's
        once its completion is answered). The last epoch of a trial's full budget is kept for
        its completion (`finish`), unless its study keeps models: the server judges the
        model's upload by that report, which is then sent at once and answered while the
        trainer scores the model on the test split."""
        full = assignment.target_epochs == assignment.epochs
        lease = Lease(assignment.trial_id, assignment.token, last_epoch=assignment.target_epochs)
        lease.with_completion = full and not assignment.keep_model
        lease.outbox = self.reports.trial(
            assignment.trial_id, assignment.token, assignment.report_interval
        )
        self.hold([lease])
        return lease

    def run_trial(self, assignment: Assignment, lease_next: bool = False) -> list[Assignment]:
        """Train one assignment to its end (its completion goes to the background sender);
        returns the next trials when `lease_next`: those leased ahead while its last epoch
        trained, else those the completion leased (waiting for its answer)."""
        from trainer.train import TrainConfig, TrainingError, train

        trial_id, token = assignment.trial_id, assignment.token
        lease = self.lease_for(assignment)
        label = f"trial #{assignment.number} of '{assignment.study_name}'"
        params = " ".join(f"{k}={short(v)}" for k, v in assignment.params.items())
        start = assignment.start_epoch
        resuming = f" (resuming after epoch {start})" if start else ""
        log.info("%s started on %s%s: %s", label, self.where, resuming, params)
        started = time.monotonic()
        if assignment.target_epochs - start <= 1:
            self.lease_ahead(lease)  # its only epoch is its last
        try:
            config = TrainConfig.from_assignment(
                assignment.workload,
                assignment.params,
                assignment.epochs,
                self.device,
                stop_epoch=assignment.target_epochs,
                resume=self.resume_state(assignment) if start else None,
            )
            config.leaving = self.shutdown  # a checkpoint before the trial is handed back
            result = train(
                config,
                lambda epoch, metrics: self.report_epoch(lease, epoch, metrics),
                checkpoint=lambda epoch, blob: self.upload_checkpoint(lease, epoch, blob),
            )
            ahead = self.take_ahead() if lease_next else None
            done = self.finish(assignment, lease, label, result, started, lease_next and not ahead)
            return ahead or (self.answer(done) if lease_next else [])
        except TrainingError as exc:
            reason = str(exc)
            self.send_held(lease)
            self.final_call(lambda: self.client.fail(self.worker_id, trial_id, token, reason))
            log.info("%s failed: %s", label, reason)
        except Exception as exc:  # a bug in a model or plugin fails the trial, not the worker
            reason = f"{type(exc).__name__}: {exc}"
            self.send_held(lease)
            self.final_call(lambda: self.client.fail(self.worker_id, trial_id, token, reason))
            log.exception("%s failed: %s", label, reason)
        finally:
            if not lease.sending:  # else the sender lets go of it once answered
                self.release_held([lease])
        return (self.take_ahead() or []) if lease_next else []

    def resume_state(self, assignment: Assignment) -> bytes:
        if assignment.checkpoint_id is None:
            raise ValueError(f"trial {assignment.trial_id} resumes without a checkpoint id")
        return self.client.load_checkpoint(
            self.worker_id, assignment.trial_id, assignment.token, assignment.checkpoint_id
        )

    def upload_checkpoint(self, lease: Lease, epoch: int, blob: bytes) -> None:
        """Upload the checkpoint taken after `epoch` (before that epoch's report)."""
        if lease.lost.is_set():
            return
        lease.checkpointed = epoch
        try:
            self.client.save_checkpoint(self.worker_id, lease.trial_id, lease.token, epoch, blob)
        except ApiError as exc:
            if exc.status in (404, 409, 507):  # not ours any more, or failed by the server
                log.warning("checkpoint of trial %d not stored: %s", lease.trial_id, exc)
                lease.lost.set()
                return
            raise

    def report_epoch(self, lease: Lease, epoch: int, metrics: dict[str, float]) -> Decision:
        """The answer to `epoch`'s report: the server's, or `continue` for a report held
        (trainer.reporting.TrialReports) or kept for the completion (the full budget's last
        epoch). A worker shutting down holds nothing: the answer says `stop` at once."""
        if lease.lost.is_set():
            return Decision.STOP
        # Read before the report leaves, after the loop decided this epoch's checkpoint with
        # it (config.leaving): a shutdown after that is heard at the next epoch, checkpointed.
        leaving = self.shutdown.is_set()
        if epoch == lease.last_epoch - 1 and not leaving:
            # The last epoch trains now (this runs beside it), about as long as this one.
            self.lease_ahead(lease, metrics.get("epoch_seconds", 0.0))
        outbox = lease.outbox or self.reports.trial(lease.trial_id, lease.token, 0.0)
        lease.outbox = outbox
        if epoch == lease.last_epoch and lease.with_completion and not leaving:
            outbox.keep(epoch, metrics)  # `finish` sends it with the completion
            return Decision.CONTINUE
        hold = not leaving and epoch not in (lease.last_epoch, lease.checkpointed)
        try:
            decision = outbox.report(epoch, metrics, hold=hold)
        except ApiError as exc:
            if exc.status in (404, 409):  # re-leased to another worker, or deleted
                lease.lost.set()
                return Decision.STOP
            raise
        if decision is Decision.CONTINUE and leaving:
            return Decision.STOP  # we are shutting down: release after this epoch
        return decision

    def finish(
        self,
        assignment: Assignment,
        lease: Lease,
        label: str,
        result: Any,
        started: float,
        lease_next: bool,
    ) -> Future[list[Assignment]] | None:
        """Close the trial with the server and log its one line. A trial that trained its
        budget is completed in the background (its model file's upload first): the future of
        the next trials leased with the completion when `lease_next` (else of []); its lease
        stays renewed until the answer. Any other end is said here: None."""
        seconds = time.monotonic() - started
        metric = assignment.metric
        value = short(result.metrics.get(metric))
        decision: Decision | None = result.decision
        if decision is None:
            blob = self._model_file(assignment, lease, result)  # off the trained model, now
            reports = lease.outbox.take() if lease.outbox is not None else []
            lease.sending = True
            self.hold([lease])
            return self.finishing.submit(
                lambda: self._complete(
                    assignment, lease, label, result, seconds, blob, reports, lease_next
                )
            )
        if decision is Decision.STOP and not lease.lost.is_set():
            self._leaving()
            self.final_call(
                lambda: self.client.release(self.worker_id, lease.trial_id, lease.token)
            )
            log.info("%s released unfinished (worker shutting down)", label)
        elif decision is Decision.STOP:
            log.info("%s is no longer ours (re-leased or deleted); dropped", label)
        else:
            state = "pruned" if decision is Decision.PRUNE else "paused"
            log.info(
                "%s %s after %.1f s: %s=%s at epoch %d",
                label,
                state,
                seconds,
                metric,
                value,
                assignment.start_epoch + result.epochs_trained,
            )
        return None

    def _complete(
        self,
        assignment: Assignment,
        lease: Lease,
        label: str,
        result: Any,
        seconds: float,
        blob: bytes | None,
        reports: list[TrialReport],
        lease_next: bool,
    ) -> list[Assignment]:
        """On the sender's thread: the model file's upload, then the completion (leasing
        the next `fuse` trials when `lease_next`); its log line when the answer is in."""
        try:
            if blob is not None and not lease.lost.is_set():
                self._upload_model(lease, blob)
            # The worker's other trials are training or still completing: not lost answers.
            held = [t for t in self.held_ids() if t != lease.trial_id] if lease_next else None
            completion = self.final_call(
                lambda: self.client.complete(
                    self.worker_id,
                    lease.trial_id,
                    lease.token,
                    lease=self.fuse if lease_next else 0,
                    held=held,
                    test_metrics=result.test_metrics,
                    reports=reports,
                )
            )
        except ApiError as exc:  # refused for good: its lease expires, it is trained again
            log.warning("%s was not completed: %s", label, exc)
            completion = None
        finally:
            self.release_held([lease])
        metric = assignment.metric
        state = completion.state.value if completion else "lost"
        log.info(
            "%s %s in %.1f s: %s=%s at epoch %d%s",
            label,
            state,
            seconds,
            metric,
            short(result.metrics.get(metric)),
            assignment.target_epochs,
            _held_out(result.test_metrics) if state == "completed" else "",
        )
        return completion.assignments if completion else []

    def send_held(self, lease: Lease) -> None:
        """Send a trial's held reports before it fails: its curve keeps every epoch it
        trained. Their answer no longer matters; an error is logged."""
        if lease.outbox is None or not lease.outbox.held or lease.lost.is_set():
            return
        try:
            lease.outbox.flush()
        except (ApiError, ServerUnreachable) as exc:
            log.warning("the last reports of trial %d were not stored: %s", lease.trial_id, exc)

    def _model_file(self, assignment: Assignment, lease: Lease, result: Any) -> bytes | None:
        """The model file of a trial that trained its full budget, when its study keeps
        models (uploaded before its completion: `_upload_model`); None else. Written here, on
        the training thread, so that nothing of the trained run outlives the trial."""
        full = assignment.target_epochs == assignment.epochs
        if not (assignment.keep_model and full) or result.run is None or lease.lost.is_set():
            return None
        from trainer import model_file

        return model_file.for_assignment(assignment, result.run, result.metrics)

    def _upload_model(self, lease: Lease, blob: bytes) -> None:
        """Upload a completed trial's model file; the server keeps it if it is among the
        study's best. A refused upload is logged and the trial completes all the same."""
        try:
            saved = self.client.save_model(self.worker_id, lease.trial_id, lease.token, blob)
        except ApiError as exc:
            log.warning("the model of trial %d was not stored: %s", lease.trial_id, exc)
            return
        if not saved.kept:
            log.debug("the model of trial %d is not kept: %s", lease.trial_id, saved.detail)

    def final_call(self, fn: Callable[[], T]) -> T | None:
        """A final call for a trial: a stale lease (409) or a deleted trial (404) is no error."""
        try:
            return fn()
        except ApiError as exc:
            if exc.status in (404, 409):
                log.warning("the server no longer expects this trial: %s", exc)
                return None
            raise


def _held_out(test_metrics: dict[str, Any] | None) -> str:
    """The completion line's held-out score, labelled as the page labels it."""
    accuracy = (test_metrics or {}).get("test_accuracy")
    if accuracy is None:
        return ""
    return f"; held-out test_accuracy={short(accuracy)} (never used for selection)"


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
