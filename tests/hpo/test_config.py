"""One configuration path: the environment as the server and the command line read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo import config
from service.settings import DEFAULT_DATABASE_URL, Settings


def test_settings_read_every_variable_once_and_flags_win() -> None:
    env = {
        "HPO_DATABASE_URL": "sqlite:///env.db",
        "HPO_ARTIFACTS_DIR": "/data/artifacts",
        "HPO_API_TOKEN": "user-token",
        "HPO_WORKER_TOKEN": "",  # set but empty: no token, as if unset
        "HPO_LEASE_SECONDS": "7.5",
        "HPO_MAX_ATTEMPTS": "5",
        "HPO_DATABASE_WAIT_SECONDS": "0",
        "HPO_MAX_CHECKPOINT_BYTES": "1024",
    }
    settings = Settings.from_env(env, database_url="sqlite:///flag.db", database_wait_seconds=None)
    assert settings.database_url == "sqlite:///flag.db"
    assert settings.artifacts_dir == Path("/data/artifacts")
    assert (settings.api_token, settings.worker_token) == ("user-token", None)
    assert (settings.lease_seconds, settings.max_attempts) == (7.5, 5)
    assert (settings.database_wait_seconds, settings.max_checkpoint_bytes) == (0, 1024)


def test_unset_and_empty_variables_take_the_defaults() -> None:
    settings = Settings.from_env({"HPO_DATABASE_URL": ""})
    assert settings == Settings(database_url=DEFAULT_DATABASE_URL)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HPO_LEASE_SECONDS", "-1", "HPO_LEASE_SECONDS must be a number of at least 0.1; got '-1'"),
        (
            "HPO_LEASE_SECONDS",
            "nan",
            "HPO_LEASE_SECONDS must be a number of at least 0.1; got 'nan'",
        ),
        (
            "HPO_MAX_CHECKPOINT_BYTES",
            "4GB",
            "HPO_MAX_CHECKPOINT_BYTES must be an integer of at least 1; got '4GB'",
        ),
    ],
)
def test_a_bad_number_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value) == message


def test_a_token_given_on_the_command_line_wins_over_the_environment() -> None:
    env = {"HPO_WORKER_TOKEN": "from-env"}
    assert config.token(config.WORKER_TOKEN, "from-flag", env) == "from-flag"
    assert config.token(config.WORKER_TOKEN, None, env) == "from-env"
    assert config.token(config.API_TOKEN, None, env) is None


def test_server_urls() -> None:
    assert config.server_url("http://gpu-box:8000/") == "http://gpu-box:8000"
    assert config.server_url("https://hpo.example.org/prefix") == "https://hpo.example.org/prefix"
    for bad in ("gpu-box:8000", "ftp://gpu-box", "http://", ""):
        with pytest.raises(config.ConfigError, match="--server must be an http:// or https:// URL"):
            config.server_url(bad)
