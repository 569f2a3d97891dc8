"""A study and its trials as a notebook sees them: typed objects over the REST API.

`Client.study(...)` and `Client.create_study(...)` return a `Study`; it keeps the server's JSON
of the study as it was last read (`study.data`, also readable as `study["state"]`), and every
method is one or a few API calls. Trials are pydantic models (`Trial`, `BestTrial`) parsed from
the server's answers; fields a newer server adds are ignored.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from hpo.model import load_model
from hpo.progress import wait as follow
from hpo.protocol import StudyState, TrialState

if TYPE_CHECKING:
    import pandas

    from hpo.client import Client

PAGE = 1000  # trials per request of Study.trials()


class BestTrial(BaseModel):
    """The study's best completed trial as the study's `best` names it."""

    model_config = ConfigDict(extra="ignore")

    trial_id: int
    number: int
    value: float | None
    # Several objectives: its value of each, in the spec's order (`value` is then None).
    values: list[float | None] | None = None
    params: dict[str, Any]
    model_url: str | None = None  # where its kept model file is downloaded
    # Its final model on the held-out test split, never used for selection:
    # {"test_accuracy", "test_loss"}, {"unavailable": why}, or None (an older worker sent none).
    test_metrics: dict[str, Any] | None = None


class Trial(BaseModel):
    """One trial (`GET /api/v1/studies/{id}/trials`); `curve()` reads its learning curve."""

    model_config = ConfigDict(extra="ignore")

    id: int
    study_id: int
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None
    # Several objectives: its value of each at its last report, in the spec's order.
    values: list[float | None] | None = None
    epochs: int
    worker: str | None = None
    attempt: int = 1
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    bracket: int = 0
    rung: int = 0
    # Its latest checkpoint's epoch (0: none), where it resumes when paused or handed out
    # again; it may trail `epochs` (the `checkpoint_seconds` tunable, docs/trainer.md).
    checkpoint_epoch: int = 0
    # Where its kept model file is downloaded (None: no model is kept for it).
    model_url: str | None = None
    _client: Client | None = PrivateAttr(default=None)

    def model(self) -> Any:
        """Its kept model as a PyTorch module in eval mode, taking raw inputs
        (`hpo.load_model`). Raises ApiError 404 with the reason when none is kept (e.g. it is
        not among the study's best `keep_models`); needs PyTorch."""
        assert self._client is not None, "a Trial made by hand has no server to ask"
        return load_model(self._client.model_bytes(self.id))

    def curve(self) -> list[dict[str, Any]]:
        """The learning curve: one `{"epoch": n, <metric>: value, ...}` per reported epoch."""
        assert self._client is not None, "a Trial made by hand has no server to ask"
        detail = self._client.trial_json(self.id)
        return [{"epoch": point["epoch"], **point["metrics"]} for point in detail["curve"]]


class Study:
    """A study on the server. Attributes read the JSON of the last answer; `refresh()` (and
    `wait()`, `stop()`, `resume()`, `extend()`) read it again."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    def __repr__(self) -> str:
        return f"<Study {self.id} {self.name!r} {self.state.value}>"

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    # -- what the study is ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def state(self) -> StudyState:
        return StudyState(self.data["state"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.data["spec"]
        return spec

    @property
    def counts(self) -> dict[str, int]:
        """Trials in each trial state."""
        counts: dict[str, int] = self.data["counts"]
        return counts

    @property
    def max_trials(self) -> int:
        return int(self.data["max_trials"])

    @property
    def reason(self) -> str | None:
        """Why the study failed, or why a running study gets no trials (None: no reason)."""
        return self.data.get("reason")

    def best_model(self) -> Any:
        """The best trial's kept model as a PyTorch module in eval mode (`Trial.model()`).
        Raises ApiError 404 when it has none, LookupError while no trial has completed."""
        best = self.refresh().data.get("best")
        if isinstance(best, list):  # several objectives: the Pareto set has no one best
            raise LookupError(
                f"study '{self.name}' has several objectives: pick a trial of its Pareto set "
                "(study.best) and call trials()[...].model()"
            )
        if best is None:
            raise LookupError(f"study '{self.name}' has no completed trial yet")
        return load_model(self.client.model_bytes(int(best["trial_id"])))

    @property
    def objectives(self) -> list[dict[str, str]]:
        """The study's objectives, `{metric, direction}` each: its `objectives`, else its one
        `objective`."""
        spec = self.spec
        objectives: list[dict[str, str]] = spec.get("objectives") or [spec["objective"]]
        return objectives

    @property
    def best(self) -> BestTrial | list[BestTrial] | None:
        """The best completed trial (None while there is none); for a study with several
        objectives, its Pareto set: a list of the completed trials no other beats on every
        objective, by number (empty while there is none)."""
        best = self.data.get("best")
        if isinstance(best, list):
            return [BestTrial.model_validate(item) for item in best]
        return None if best is None else BestTrial.model_validate(best)

    # -- following it -----------------------------------------------------------------------

    def refresh(self) -> Study:
        """Read the study again; returns itself."""
        self.data = self.client.study_json(self.id)
        return self

    def wait(self, timeout: float | None = None, progress: bool = True) -> Study:
        """Block until the study is no longer running (completed, stopped or failed), showing a
        progress line on standard output unless `progress` is False; returns itself, refreshed.
        Raises TimeoutError after `timeout` seconds (None: no limit)."""
        out = sys.stdout if progress else None
        self.data = follow(self.client, self.id, out=out, timeout=timeout)
        return self

    def trials(self) -> list[Trial]:
        """Every trial by number (read a page at a time)."""
        trials: list[Trial] = []
        after: int | None = None
        while True:
            page = self.client.trials_page(self.id, limit=PAGE, after=after)
            for item in page["items"]:
                trial = Trial.model_validate(item)
                trial._client = self.client
                trials.append(trial)
            after = page["next"]
            if after is None:
                return trials

    def dataframe(self, curves: bool = False) -> pandas.DataFrame:
        """One row per trial, indexed by number: the trial's fields, `duration_seconds`,
        `train_seconds`, a `params_<name>` column per parameter and a `metrics_<name>` column
        per metric of its last epoch (the columns of `hpo export`); a study with several
        objectives has a `values_<metric>` column per objective after `value` (which is
        empty): the trial's `values`, its objectives at its last epoch. With `curves=True` a
        `curve` column holds each trial's learning curve as `Trial.curve()` gives it.
        Needs pandas (`pip install 'hpo-service[pandas]'`)."""
        try:
            import pandas
        except ImportError as exc:  # pragma: no cover - the message is the point
            raise ImportError(
                "Study.dataframe() needs pandas: pip install 'hpo-service[pandas]'"
            ) from exc
        buffer = io.BytesIO()
        self.client.export(self.id, "jsonl", buffer)
        rows = []
        for line in buffer.getvalue().decode().splitlines():
            record = json.loads(line)
            params, metrics = record.pop("params"), record.pop("metrics")
            record.update({f"params_{k}": v for k, v in params.items()})
            record.update({f"metrics_{k}": v for k, v in metrics.items()})
            rows.append(record)
        frame = pandas.DataFrame(rows)
        if frame.empty:
            return frame
        for column in ("started_at", "finished_at"):
            frame[column] = pandas.to_datetime(frame[column], utc=True)
        if self.spec.get("objectives"):
            at = frame.columns.get_loc("value") + 1
            for offset, objective in enumerate(self.objectives):
                metric = f"metrics_{objective['metric']}"
                column = frame.get(metric)
                frame.insert(int(at) + offset, f"values_{objective['metric']}", column)
        if curves:
            frame["curve"] = [
                [{"epoch": p["epoch"], **p["metrics"]} for p in self.client.trial_json(i)["curve"]]
                for i in frame["id"]
            ]
        return frame.set_index("number", drop=False).rename_axis(None)

    def export(self, path: str | Path, format: str = "csv") -> int:
        """Write the trials to `path` as `csv` or `jsonl` (as `hpo export`); returns bytes."""
        with open(path, "wb") as out:
            return self.client.export(self.id, format, out)

    # -- steering it ------------------------------------------------------------------------

    def stop(self) -> Study:
        """No new trials; running ones pause at their next report."""
        self.data = self.client.json_object("POST", f"/api/v1/studies/{self.id}/stop")
        return self

    def resume(self) -> Study:
        """A stopped study continues where it was."""
        self.data = self.client.json_object("POST", f"/api/v1/studies/{self.id}/resume")
        return self

    def extend(self, max_trials: int) -> Study:
        """Raise (or lower) the study's budget to `max_trials` trials in all; a finished study
        given more trials runs again."""
        body = {"budget": {"max_trials": max_trials}}
        self.data = self.client.json_object("PATCH", f"/api/v1/studies/{self.id}", body=body)
        return self

    def delete(self) -> None:
        """Remove the study, its trials, curves and files from the server."""
        self.client.call("DELETE", f"/api/v1/studies/{self.id}")
