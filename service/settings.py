"""Server settings: read once from the environment by the CLI, then injected (never imported)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpo import config

DEFAULT_DATABASE_URL = "sqlite:///./hpo.db"
DEFAULT_ARTIFACTS_DIR = "./artifacts"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    artifacts_dir: Path = field(default_factory=lambda: Path(DEFAULT_ARTIFACTS_DIR))
    api_token: str | None = None
    worker_token: str | None = None
    # A lease lives this long without a heartbeat or report; workers heartbeat every third of it.
    lease_seconds: float = 30.0
    # A trial whose lease expired this many times ends `failed`.
    max_attempts: int = 3
    # A worker may hold the reports of a trial that no pruner reads this long and send them
    # together (the lease's `report_interval`; 0: every report at once). The live page reloads
    # a trial's curve at most once a second (service/web/js/refresh.js), so it sees no later
    # curve, and a stopped study is heard at most this much later.
    report_interval_seconds: float = 1.0
    # A worker unseen for this long is shown as stale.
    stale_worker_seconds: float = 60.0
    # How long start-up waits for a database that does not accept connections yet.
    database_wait_seconds: float = 60.0
    # SQLite busy timeout: how long a writer waits for the lock before giving up.
    sqlite_busy_timeout_s: float = 30.0
    # Request bodies larger than this are refused with 413 before they are read...
    max_body_bytes: int = 10 * 1024**2
    # ...except checkpoint uploads, which may be this large.
    max_checkpoint_bytes: int = 4 * 1024**3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from the HPO_* environment variables (`env`, default os.environ); overrides
        (command-line flags) win unless None. Raises hpo.config.ConfigError naming the variable
        whose value cannot be used."""
        values: dict[str, object] = {
            "database_url": config.env_text("HPO_DATABASE_URL", env) or DEFAULT_DATABASE_URL,
            "artifacts_dir": Path(
                config.env_text("HPO_ARTIFACTS_DIR", env) or DEFAULT_ARTIFACTS_DIR
            ),
            "api_token": config.token(config.API_TOKEN, env=env),
            "worker_token": config.token(config.WORKER_TOKEN, env=env),
        }
        for name, (variable, kind, minimum) in _NUMBERS.items():
            value = config.env_number(variable, kind, minimum, env)
            if value is not None:
                values[name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


# Settings read from a numeric variable: the variable, its type and its smallest sensible value.
_NUMBERS: dict[str, tuple[str, type[int] | type[float], float]] = {
    "lease_seconds": ("HPO_LEASE_SECONDS", float, 0.1),
    "max_attempts": ("HPO_MAX_ATTEMPTS", int, 1),
    "report_interval_seconds": ("HPO_REPORT_INTERVAL_SECONDS", float, 0),
    "database_wait_seconds": ("HPO_DATABASE_WAIT_SECONDS", float, 0),
    "max_checkpoint_bytes": ("HPO_MAX_CHECKPOINT_BYTES", int, 1),
}
