"""`--log-format json`: one JSON object per line, and no token in any line, in either format."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import optuna
import pytest

from hpo import logs
from tests.conftest import Processes, spec_doc, wait_for

USER, WORKER = "user-Token-1f9c2", "worker-Token-7a3e8"
CLI_TOKEN = "cli-Token-55d0"


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`configure` changes process-wide logging; put everything back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    optuna.logging.disable_propagation()
    optuna.logging.enable_default_handler()
    optuna.logging.set_verbosity(logging.INFO)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` is one JSON object with ts, level, logger and msg."""
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
        entries.append(entry)
    return entries


def test_json_lines_carry_fields_and_never_a_token(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_API_TOKEN", USER)
    monkeypatch.setenv("HPO_WORKER_TOKEN", WORKER)
    out = io.StringIO()
    logs.configure("json", "info", secrets=[CLI_TOKEN], stream=out)
    log = logging.getLogger("hpo.test")

    log.info("trial #%d started", 3, extra={"trial_id": 3, "params": {"lr": 0.01}})
    log.debug("not shown at info")
    log.warning("header was Authorization: Bearer %s", "some-other-secret")
    log.warning("tokens %s %s %s", USER, WORKER, CLI_TOKEN, extra={"sent": {"token": USER}})
    log.error("cannot reach postgresql+psycopg://hpo:pg-password@db:5432/hpo")
    log.info("loss", extra={"value": float("nan")})
    try:
        raise RuntimeError(f"refused {WORKER}")
    except RuntimeError:
        log.exception("worker failed")
    optuna.logging.get_logger("optuna.test").info("from optuna")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library warning", UserWarning, stacklevel=1)

    text = out.getvalue()
    entries = json_lines(text)
    assert [e["msg"] for e in entries[:2]] == [
        "trial #3 started",
        "header was Authorization: Bearer ***",
    ]
    first = entries[0]
    assert (first["level"], first["logger"], first["trial_id"]) == ("info", "hpo.test", 3)
    assert first["params"] == {"lr": 0.01}
    assert first["ts"].endswith("Z")
    assert entries[2]["msg"] == "tokens *** *** ***"
    assert entries[2]["sent"] == {"token": "***"}
    assert entries[3]["msg"] == "cannot reach postgresql+psycopg://hpo:***@db:5432/hpo"
    assert entries[4]["value"] == "nan"
    assert entries[5]["level"] == "error"
    assert "RuntimeError: refused ***" in entries[5]["exc"]
    assert entries[6]["msg"] == "from optuna"
    assert entries[7]["logger"] == "py.warnings" and "a library warning" in entries[7]["msg"]
    assert len(entries) == 8  # the debug line is below the level
    for secret in (USER, WORKER, CLI_TOKEN, "some-other-secret", "pg-password"):
        assert secret not in text


def test_text_format_redacts_too(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_WORKER_TOKEN", WORKER)
    out = io.StringIO()
    logs.configure("text", "info", stream=out, text_format="%(levelname)s %(message)s")
    logging.getLogger("hpo.test").warning("token %s", WORKER)
    assert out.getvalue() == "WARNING token ***\n"


def test_a_secret_is_redacted_as_a_whole_word_only() -> None:
    redact = logs.Redactor(["u", "p@ss!"])
    assert redact("uvicorn u started") == "uvicorn *** started"
    assert redact("?token=p@ss!&x") == "?token=***&x"
    assert redact("Authorization: Bearer <token>") == "Authorization: Bearer <token>"
    assert redact("Authorization: Bearer eyJh.b-c_d==") == "Authorization: Bearer ***"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json; got 'xml'"):
        logs.configure("xml")


@pytest.mark.e2e
def test_server_writes_only_json_and_no_token(processes: Processes) -> None:
    env = {"HPO_API_TOKEN": USER, "HPO_WORKER_TOKEN": WORKER}
    url = processes.server("server", "--log-format", "json", "--log-level", "debug", **env)
    proc = processes.process("server")
    user = {"Authorization": f"Bearer {USER}"}
    assert httpx.post(f"{url}/api/v1/studies", json=spec_doc(), headers=user).status_code == 201
    assert httpx.get(f"{url}/api/v1/studies", headers={"Authorization": "Bearer nope"}).is_error
    worker = {"Authorization": f"Bearer {WORKER}"}
    reply = httpx.post(f"{url}/api/v1/workers/register", json={"name": "w"}, headers=worker)
    assert reply.status_code == 201
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)

    text = processes.log("server")
    entries = json_lines(text)
    messages = [e["msg"] for e in entries]
    assert any(m.startswith(f"hpo server on {url}/") for m in messages), messages
    assert any(m.startswith("Uvicorn running on") for m in messages), messages
    assert any("A new study created" in m for m in messages), messages  # Optuna's line
    access = {
        (e["method"], e["path"], e["status"]) for e in entries if e["logger"] == "uvicorn.access"
    }
    assert {("POST", "/api/v1/studies", 201), ("GET", "/api/v1/studies", 401)} <= access
    assert USER not in text and WORKER not in text


@pytest.mark.e2e
def test_worker_writes_only_json_and_no_token(processes: Processes) -> None:
    url = processes.server(HPO_API_TOKEN=USER, HPO_WORKER_TOKEN=WORKER)
    doc = spec_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 2})
    user = {"Authorization": f"Bearer {USER}"}
    study = httpx.post(f"{url}/api/v1/studies", json=doc, headers=user).json()
    worker = processes.worker(
        "worker", url, "--log-format", "json", "--token", WORKER, HPO_WORKER_TOKEN=WORKER
    )
    # A worker with a wrong token given on the command line: refused, and the token not logged.
    refused = processes.worker("refused", url, "--log-format", "json", "--token", CLI_TOKEN)
    assert refused.wait(60) == 1

    def finished() -> bool:
        reply = httpx.get(f"{url}/api/v1/studies/{study['id']}", headers=user).json()
        return bool(reply["state"] == "completed")

    wait_for(finished, 120, "the study to complete")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0

    text = processes.log("worker")
    entries = json_lines(text)
    messages = [e["msg"] for e in entries]
    assert any(" registered with " in m for m in messages), messages
    assert any(m.startswith("trial #0 of 's1' completed") for m in messages), messages
    assert entries[-1]["msg"].endswith(" stopped") and entries[-1]["logger"] == "hpo.worker"
    assert WORKER not in text

    refused_text = processes.log("refused")
    (entry,) = json_lines(refused_text)
    assert entry["level"] == "error" and "the server refused the worker: 401" in entry["msg"]
    assert entry["msg"].endswith("send `Authorization: Bearer <token>`")  # a hint, not a secret
    assert CLI_TOKEN not in refused_text
