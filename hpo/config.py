"""How every hpo process reads its configuration: the environment variables of DESIGN.md, the
defaults the command line shares, and the checks that turn a bad value into one message naming
the variable or flag.

The server's settings (`service.settings.Settings.from_env`), the command line (`service.cli`)
and the log redaction (`hpo.logs`) read the environment through here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"  # without tokens the server listens on loopback only
DEFAULT_PORT = 8000
DEFAULT_SERVER = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
API_TOKEN = "HPO_API_TOKEN"  # users: the page, the REST API, `hpo submit`
WORKER_TOKEN = "HPO_WORKER_TOKEN"  # workers: the worker protocol
TOKEN_VARIABLES = (API_TOKEN, WORKER_TOKEN)
DATA_DIR = "HPO_DATA_DIR"  # where workers cache downloaded datasets
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
# How long a client keeps retrying an unreachable server: a worker outlives a server restart;
# `hpo submit` has a person waiting.
RETRY_SECONDS = 60.0
SUBMIT_RETRY_SECONDS = 5.0


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names where it came from."""


def env_text(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The variable's value; None when it is unset or empty (an empty token is no token)."""
    value = (os.environ if env is None else env).get(name)
    return value or None


def env_number(
    name: str,
    kind: type[int] | type[float],
    minimum: float,
    env: Mapping[str, str] | None = None,
) -> int | float | None:
    """The variable as a number of `kind` no smaller than `minimum`; None when unset.

    Raises ConfigError naming the variable for anything else."""
    raw = env_text(name, env)
    if raw is None:
        return None
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what} of at least {minimum:g}; got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{name} must be {what} of at least {minimum:g}; got {raw!r}")
    return value


def token(
    variable: str, given: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The token given on the command line, else the one in `variable`; None for none."""
    return given or env_text(variable, env)


def server_url(value: str) -> str:
    """A server address as `--server` takes it: an http:// or https:// URL with a host, without
    the trailing slash. Raises ConfigError otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--server must be an http:// or https:// URL such as {DEFAULT_SERVER}; got {value!r}"
        )
    return value.strip().rstrip("/")
