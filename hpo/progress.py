"""Following a study until it ends: the live progress line of `hpo submit --wait`, `hpo demo`
and `Study.wait()`."""

from __future__ import annotations

import io
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from hpo.client import ServerUnreachable

if TYPE_CHECKING:
    from hpo.client import Client

FINISHED = ("completed", "pruned", "failed")
WIDTH = 24
LOST = "the server does not answer; waiting for it to come back"


def line(study: dict[str, Any]) -> str:
    counts = study["counts"]
    done = sum(counts.get(s, 0) for s in FINISHED)
    total = max(1, study["max_trials"])
    filled = min(WIDTH, round(WIDTH * done / total))
    best = study.get("best")
    if isinstance(best, list):  # several objectives: the size of the Pareto front
        best_text = f"Pareto front {len(best)} trial{'' if len(best) == 1 else 's'}"
    else:
        metric = study["spec"]["objective"]["metric"]
        value = f"{best['value']:.4g}" if best and best["value"] is not None else "-"
        best_text = f"best {metric} {value}"
    waiting = f"; {study['reason']}" if study["state"] == "running" and study.get("reason") else ""
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} trials done, "
        f"{counts.get('running', 0)} running, {best_text}{waiting}"
    )


def wait(
    client: Client,
    study_id: int,
    out: TextIO | None = sys.stdout,
    every: float = 1.0,
    patience: float = 600.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Show progress on `out` (None: silently) until the study completes, fails or is stopped;
    return its final view (the server's JSON).

    A server that stops answering (it is restarting) is waited for, with a line saying so, for
    up to `patience` seconds after its last answer; then ServerUnreachable is raised. After
    `timeout` seconds (None: no limit) TimeoutError is raised, naming the study's state."""
    out = out if out is not None else _Silent()
    tty = out.isatty()
    last = ""
    answered = started = time.monotonic()
    while True:
        try:
            study = client.study_json(study_id)
        except ServerUnreachable:
            if time.monotonic() - answered > patience:
                raise
            if last != LOST:
                out.write(("\n" if tty else "") + LOST + "\n")
                out.flush()
                last = LOST
            time.sleep(every)
            continue
        answered = time.monotonic()
        text = line(study)
        if tty:
            out.write("\r" + text.ljust(len(last)))
        elif text != last:
            out.write(text + "\n")
        out.flush()
        last = text
        if study["state"] != "running":
            if tty:
                out.write("\n")
            return study
        if timeout is not None and time.monotonic() - started + every > timeout:
            if tty:
                out.write("\n")
            raise TimeoutError(
                f"study {study_id} is still running after {timeout:g} s: {text.strip()}"
            )
        time.sleep(every)


class _Silent(io.StringIO):
    """Where progress goes when nobody watches."""

    def write(self, text: str) -> int:
        return len(text)
