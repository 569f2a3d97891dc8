"""Log output of `hpo server` and `hpo worker`: text for people, JSON lines for log collectors.

`--log-format json` writes one JSON object per line to stderr: `ts` (UTC, ISO 8601 with
milliseconds), `level`, `logger`, `msg`, then the extra fields of the call
(`log.info("...", extra={"trial_id": 3})`), and `exc` with the traceback when there is one.
The records of Uvicorn, Alembic and Optuna, Python's warnings and uncaught exceptions go
through the same handler, so nothing else is written in between.

Secrets never reach the output, in either format: the values of `HPO_API_TOKEN` and
`HPO_WORKER_TOKEN` (and any token given on the command line), whatever follows `Bearer`, and the
password in a database URL are replaced by `***` wherever they stand as a whole word.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import sys
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TextIO

from hpo.config import DEFAULT_LOG_FORMAT, LOG_FORMATS, TOKEN_VARIABLES, env_text

REDACTED = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# RFC 6750's token68 characters: "Bearer <token>" in a help text is left alone.
_TOKEN_CHAR = r"[A-Za-z0-9\-._~+/]"
_BEARER = re.compile(rf"(?i)(bearer\s+){_TOKEN_CHAR}+=*")
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+@", re.IGNORECASE)
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)


class Redactor:
    """Replaces known secrets, bearer credentials and URL passwords in text with `***`.

    A secret is replaced where it stands as a whole word (not next to another token
    character), so that a short token such as `u` does not turn `uvicorn` into `***vicorn`.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so that a token containing another one is replaced whole.
        words = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.secrets: re.Pattern[str] | None = None
        if words:
            alternatives = "|".join(re.escape(w) for w in words)
            self.secrets = re.compile(rf"(?<!{_TOKEN_CHAR})(?:{alternatives})(?!{_TOKEN_CHAR})")

    def __call__(self, text: str) -> str:
        if self.secrets is not None:
            text = self.secrets.sub(REDACTED, text)
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)


def redact_url(url: str) -> str:
    """A database URL fit for a log line or a terminal: its password replaced by `***`."""
    return Redactor()(url)


def environment_secrets() -> list[str]:
    return [token for name in TOKEN_VARIABLES if (token := env_text(name))]


class TextFormatter(logging.Formatter):
    """The usual `logging` line, with secrets redacted."""

    def __init__(self, redact: Redactor, fmt: str = TEXT_FORMAT, datefmt: str | None = None):
        super().__init__(fmt, datefmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, extra fields, exc; secrets redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_access_fields(record))
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._clean(entry), ensure_ascii=False, allow_nan=False)

    def _clean(self, value: Any) -> Any:
        """JSON-ready and redacted: strings redacted, containers walked, the rest as text."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        return self.redact(str(value))


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Uvicorn's access lines carry (client, method, path, http version, status) as arguments."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


class Logs:
    """What `configure` set up; `announce` writes the lines a user must always see."""

    def __init__(self, log_format: str, handler: logging.Handler, redact: Redactor) -> None:
        self.format = log_format
        self.handler = handler
        self.redact = redact

    def announce(self, logger: str, msg: str, **fields: Any) -> None:
        """A line shown whatever the log level (where the server listens): printed as is in
        text mode, an `info` object with `fields` in JSON mode."""
        if self.format != "json":
            print(self.redact(msg), file=sys.stderr, flush=True)
            return
        record = logging.getLogger(logger).makeRecord(
            logger, logging.INFO, "(announce)", 0, msg, (), None, extra=fields
        )
        self.handler.handle(record)


def configure(
    log_format: str = DEFAULT_LOG_FORMAT,
    level: str | int = "info",
    *,
    secrets: Iterable[str | None] = (),
    text_format: str = TEXT_FORMAT,
    datefmt: str | None = None,
    stream: TextIO | None = None,
) -> Logs:
    """Send every log record of this process to one stderr handler in `log_format`.

    Replaces the root logger's handlers; the tokens in the environment and `secrets` are
    redacted from every line. In JSON mode Optuna's own stderr handler and Python's warnings
    and uncaught exceptions are routed through the same handler, so every line is JSON.
    Raises ValueError for a format other than `text` or `json`.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}; got {log_format!r}")
    redact = Redactor([*environment_secrets(), *secrets])
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(TextFormatter(redact, text_format, datefmt))
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    if log_format == "json":
        _route_everything_to_root(numeric)
    return Logs(log_format, handler, redact)


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """Uvicorn's logging set-up for `log_format`: its own for text; none for JSON, so that its
    loggers propagate to the handler `configure` installed."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return copy.deepcopy(LOGGING_CONFIG)


def _route_everything_to_root(level: int) -> None:
    import optuna

    # Optuna writes to stderr through its own handler in its own format; send it to ours.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(max(level, logging.INFO))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("hpo").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("hpo").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
