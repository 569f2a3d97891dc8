"""Server settings: read once from the environment by the CLI, then injected (never imported)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from HPO_* environment variables; overrides (CLI flags) win unless None."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("HPO_DATABASE_URL", DEFAULT_DATABASE_URL),
            "artifacts_dir": Path(env.get("HPO_ARTIFACTS_DIR", DEFAULT_ARTIFACTS_DIR)),
            "api_token": env.get("HPO_API_TOKEN") or None,
            "worker_token": env.get("HPO_WORKER_TOKEN") or None,
        }
        if "HPO_LEASE_SECONDS" in env:
            values["lease_seconds"] = float(env["HPO_LEASE_SECONDS"])
        if "HPO_MAX_ATTEMPTS" in env:
            values["max_attempts"] = int(env["HPO_MAX_ATTEMPTS"])
        if "HPO_DATABASE_WAIT_SECONDS" in env:
            values["database_wait_seconds"] = float(env["HPO_DATABASE_WAIT_SECONDS"])
        if "HPO_MAX_CHECKPOINT_BYTES" in env:
            values["max_checkpoint_bytes"] = int(env["HPO_MAX_CHECKPOINT_BYTES"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
