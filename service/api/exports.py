"""Routes of a study's trials as a file: `trials.csv` and `trials.jsonl`, streamed a page of
trials at a time (never the whole study in memory).

CSV: one header row, then one row per trial by number; parameters are `params_<name>` columns
and the final metrics `metrics_<name>` columns (pandas' `read_csv` reads it as it is); a
multi-objective study adds a `values_<metric>` column per objective, in the spec's order; an empty
cell is a missing value, a NaN metric is `nan`. JSON Lines: one object per trial with `params`
and `metrics` objects (and `values`, by objective metric, for a multi-objective study); NaN and
infinities are `null`, as everywhere in the API.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from service.api.auth import user_access
from service.api.deps import IdPath, services_of
from service.api.serializers import finite
from service.domain.exports import Exports, TrialRecord, objective_values

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(user_access)])

FIELDS = [
    "id",
    "number",
    "state",
    "value",
    "epochs",
    "attempt",
    "worker",
    "bracket",
    "rung",
    "started_at",
    "finished_at",
    "duration_seconds",
    "train_seconds",
    "reason",
]


async def get_exports(request: Request) -> Exports:
    return Exports(services_of(request).db)


ExportsDep = Annotated[Exports, Depends(get_exports)]
CSV_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "one row per trial"}
}
JSONL_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/jsonl": {}}, "description": "one object per trial"}
}


def fields_of(record: TrialRecord) -> dict[str, Any]:
    """A trial's own fields of an export, in FIELDS order."""
    row = record.row
    return {
        "id": row.id,
        "number": row.number,
        "state": row.state.value,
        "value": row.value,
        "epochs": row.epochs,
        "attempt": row.attempt,
        "worker": record.worker,
        "bracket": row.bracket,
        "rung": row.rung,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "duration_seconds": record.duration_seconds,
        "train_seconds": record.train_seconds,
        "reason": row.reason,
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def csv_chunks(exports: Exports, study_id: int) -> Iterator[str]:
    columns = exports.columns(study_id)
    header = [
        *FIELDS,
        *(f"values_{name}" for name in columns.objectives),
        *(f"params_{name}" for name in columns.params),
        *(f"metrics_{name}" for name in columns.metrics),
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i, record in enumerate(exports.records(study_id), start=1):
        params, metrics = record.row.params or {}, record.final_metrics
        values = objective_values(columns.objectives, record)
        cells = [
            *fields_of(record).values(),
            *(values.get(name) for name in columns.objectives),
            *(params.get(name) for name in columns.params),
            *(metrics.get(name) for name in columns.metrics),
        ]
        writer.writerow([_cell(v) for v in cells])
        if i % 200 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_chunks(exports: Exports, study_id: int) -> Iterator[str]:
    objectives = exports.objectives(study_id)  # only the spec: no pass over the trials
    lines: list[str] = []
    for record in exports.records(study_id):
        item = {
            **fields_of(record),
            "params": record.row.params or {},
            "metrics": record.final_metrics,
        }
        if objectives:
            item["values"] = objective_values(objectives, record)
        lines.append(json.dumps(finite(item)) + "\n")
        if len(lines) == 200:
            yield "".join(lines)
            lines = []
    yield "".join(lines)


def _attachment(name: str, suffix: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}-trials.{suffix}"'}


@router.get("/studies/{study_id}/trials.csv", response_class=StreamingResponse, responses=CSV_DOC)
def trials_csv(exports: ExportsDep, study_id: IdPath) -> StreamingResponse:
    """Every trial of the study, one CSV row each: its fields, `params_*` and final
    `metrics_*` columns."""
    name = exports.study_name(study_id)  # 404 before the stream starts
    return StreamingResponse(
        csv_chunks(exports, study_id),
        media_type="text/csv; charset=utf-8",
        headers=_attachment(name, "csv"),
    )


@router.get(
    "/studies/{study_id}/trials.jsonl", response_class=StreamingResponse, responses=JSONL_DOC
)
def trials_jsonl(exports: ExportsDep, study_id: IdPath) -> StreamingResponse:
    """Every trial of the study, one JSON object per line, with `params` and final `metrics`."""
    name = exports.study_name(study_id)
    return StreamingResponse(
        jsonl_chunks(exports, study_id),
        media_type="application/jsonl",
        headers=_attachment(name, "jsonl"),
    )
