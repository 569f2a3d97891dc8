"""docker/compose.yml: its structure as documented, and its commands run for real outside docker.

No container engine runs here. The compose file is read through a real compose implementation,
podman-compose's `config` (variable interpolation, the .env file, anchors and merge keys), with
docker/.env.example as docker/.env; its structure is checked, and then every command it runs (the
migration, the server, the worker, the healthchecks) runs as a process against a fresh
PostgreSQL database, with the server's and the migration's processes unable to import what
docker/Dockerfile.server leaves out (PyTorch and the trainer's datasets).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dotenv import dotenv_values
from sqlalchemy import create_engine, make_url, text

from service.cli import build_parser
from tests.conftest import ROOT, Processes, free_port, postgres_database, spec_doc, wait_for
from trainer.cores import usable_cores

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
SECRETS = ("HPO_API_TOKEN", "HPO_WORKER_TOKEN", "POSTGRES_PASSWORD")

# -- the compose file as compose reads it --------------------------------------------------------


def example() -> dict[str, str]:
    """docker/.env.example's values, read by python-dotenv (what podman-compose reads it with)."""
    return {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}


def variables_used() -> set[str]:
    """The names of the variables the compose file substitutes (`${NAME...}`)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """`podman-compose --env-file ENV_FILE -f docker/compose.yml config`. The process gets none
    of the compose file's variables from this environment, so the env file alone decides.
    podman-compose asks `podman version` first: without podman these tests skip, as the
    PostgreSQL ones do without a server, unless HPO_REQUIRE_PODMAN (CI) says they must run."""
    if shutil.which("podman") is None:
        if os.environ.get("HPO_REQUIRE_PODMAN"):
            pytest.fail("HPO_REQUIRE_PODMAN is set but podman is not installed")
        pytest.skip("podman is not installed (podman-compose needs it to read the compose file)")
    env = {k: v for k, v in os.environ.items() if k not in variables_used() | set(example())}
    argv = [sys.executable, "-m", "podman_compose", "--env-file", str(env_file)]
    return subprocess.run(
        [*argv, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=DOCKER,
        timeout=60,
    )


@functools.cache
def _example_config() -> str:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return result.stdout


def compose(env: Mapping[str, str] | None = None, tmp_path: Path | None = None) -> dict[str, Any]:
    """The compose file as compose resolves it with docker/.env copied from .env.example, or
    with an env file of `env` (written into `tmp_path`)."""
    if env is None:
        doc: dict[str, Any] = yaml.safe_load(_example_config())
        return doc
    assert tmp_path is not None
    result = compose_config(env_file(tmp_path, env))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    return doc


def env_file(folder: Path, env: Mapping[str, str]) -> Path:
    path = folder / "compose.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    return path


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


# -- structure ----------------------------------------------------------------------------------


def test_the_four_services_and_their_start_order() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "server", "worker"}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"  # one-shot, and YAML's no is a string here
    assert services["server"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    assert services["worker"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    for name in ("postgres", "server", "worker"):
        assert services[name]["restart"] == "unless-stopped", name


def test_postgres_has_a_healthcheck_and_a_named_volume() -> None:
    doc = compose()
    postgres = doc["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready ")
    (volume,) = postgres["volumes"]
    source, target = volume.split(":")
    assert target == "/var/lib/postgresql/data"
    assert source in doc["volumes"]  # a named volume, not a folder of the host


def test_every_command_is_a_real_hpo_command() -> None:
    services = compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if "command" in s}
    assert set(commands) == {"migrate", "server", "worker"}
    assert commands["migrate"] == ["hpo", "db", "upgrade"]
    for name, argv in commands.items():
        assert argv[0] == "hpo", name
        args = build_parser().parse_args(argv[1:])  # SystemExit on an unknown flag or value
        assert args.command == argv[1], name
    server = build_parser().parse_args(commands["server"][1:])
    assert (server.host, server.port, server.log_format) == ("0.0.0.0", 8000, "json")
    assert server.processes == int(example()["HPO_SERVER_PROCESSES"]) == 2  # on PostgreSQL
    worker = build_parser().parse_args(commands["worker"][1:])
    assert (worker.devices, worker.server) == ("auto", "http://server:8000")


def test_the_worker_command_uses_only_flags_that_hpo_worker_has() -> None:
    argv = compose()["services"]["worker"]["command"]
    help_text = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    flags = [a for a in argv if a.startswith("--")]
    assert flags == ["--server", "--devices", "--log-format"]
    for flag in flags:
        assert flag in help_text


def test_the_server_is_published_on_the_hosts_loopback_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    values = example()
    assert compose()["services"]["server"]["ports"] == ["127.0.0.1:8000:8000"]
    without = {k: v for k, v in values.items() if k != "HPO_PUBLISH"}
    assert compose(without, tmp_path)["services"]["server"]["ports"] == ["127.0.0.1:8000:8000"]
    public = compose({**values, "HPO_PUBLISH": "0.0.0.0:8000"}, tmp_path)
    assert public["services"]["server"]["ports"] == ["0.0.0.0:8000:8000"]
    # The published container port is the one the server listens on and the worker calls.
    server = compose()["services"]["server"]
    assert option(server["command"], "--port") == "8000"
    assert "http://127.0.0.1:8000/healthz" in " ".join(server["healthcheck"]["test"])


def test_the_worker_reserves_every_nvidia_gpu() -> None:
    worker = compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert option(worker["command"], "--devices") == "auto"  # one process per visible GPU


def test_artifacts_and_data_live_on_named_volumes() -> None:
    doc = compose()
    declared = set(doc["volumes"])
    assert declared == {"postgres-data", "artifacts", "worker-data"}
    mounts = {}
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")
            assert source in declared, f"{name} mounts {source}, not a named volume"
            mounts[(name, source)] = target
    server_env = environment(doc["services"]["server"])
    assert mounts[("server", "artifacts")] == server_env["HPO_ARTIFACTS_DIR"]
    worker_env = environment(doc["services"]["worker"])
    assert mounts[("worker", "worker-data")] == worker_env["HPO_DATA_DIR"]


def test_secrets_come_from_the_env_file_and_are_required(tmp_path: Path) -> None:
    values = example()
    # Every variable the compose file uses is listed in .env.example, every secret has a value.
    assert variables_used() <= set(values), variables_used() - set(values)
    for name in SECRETS:
        assert values[name], name
    # Nothing secret is written into the compose file itself...
    for name in SECRETS:
        assert values[name] not in COMPOSE.read_text()
    # ...and without a secret, compose refuses to start rather than run with an empty one.
    for name in SECRETS:
        refused = compose_config(env_file(tmp_path, {**values, name: ""}))
        assert refused.returncode != 0, name
        assert f"{name} is missing a value: set {name} in docker/.env" in refused.stderr
    services = compose()["services"]
    assert environment(services["server"])["HPO_API_TOKEN"] == values["HPO_API_TOKEN"]
    assert environment(services["worker"])["HPO_WORKER_TOKEN"] == values["HPO_WORKER_TOKEN"]
    assert "HPO_API_TOKEN" not in environment(services["worker"])  # workers get their own only
    assert "POSTGRES_PASSWORD" not in environment(services["worker"])


def test_the_database_url_points_at_the_postgres_service() -> None:
    values = example()
    services = compose()["services"]
    for name in ("migrate", "server"):
        url = make_url(environment(services[name])["HPO_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg", name
        assert (url.host, url.port) == ("postgres", 5432)
        assert url.username == values["POSTGRES_USER"]
        assert url.password == values["POSTGRES_PASSWORD"]
        assert url.database == values["POSTGRES_DB"]
    assert "HPO_DATABASE_URL" not in environment(services["worker"])  # workers speak HTTP only


# -- images and build context ------------------------------------------------------------------


def server_image_leaves_out() -> list[str]:
    """The distributions docker/Dockerfile.server does not install, as import names."""
    match = re.search(
        r'^ARG SERVER_WITHOUT="([^"]+)"', (DOCKER / "Dockerfile.server").read_text(), re.M
    )
    assert match, "Dockerfile.server names what it leaves out in ARG SERVER_WITHOUT"
    imports = {"scikit-learn": "sklearn"}
    return [imports.get(name, name) for name in match.group(1).split()]


def test_images_and_their_bases() -> None:
    server = (DOCKER / "Dockerfile.server").read_text()
    worker = (DOCKER / "Dockerfile.worker").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", server, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.\d+$", server, re.M)
    assert re.search(
        r"^ARG BASE=pytorch/pytorch:2\.[\d.]+-cuda12\.\d+-cudnn9-runtime$", worker, re.M
    )
    assert "torch" in server_image_leaves_out()
    assert "optional-dependencies']['postgres']" in server  # psycopg comes with the server
    services = compose()["services"]
    assert services["migrate"]["build"]["dockerfile"] == "docker/Dockerfile.server"
    assert services["server"]["image"] == services["migrate"]["image"]
    assert services["worker"]["build"]["dockerfile"] == "docker/Dockerfile.worker"
    assert (COMPOSE.parent / services["worker"]["build"]["context"]).resolve() == ROOT


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's `patterns` keep `path` out (last matching pattern wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_has_what_the_images_copy_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for dockerfile in ("Dockerfile.server", "Dockerfile.worker"):
        for line in (DOCKER / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                copied |= set(shlex.split(line)[1:-1])
    assert {"pyproject.toml", "README.md", "service", "trainer", "alembic"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source, patterns), source
        assert not dockerignored(f"{source}/x.py", patterns) or not (ROOT / source).is_dir()
    for kept_out in (
        "docker/.env",
        ".env",
        ".git/config",
        "hpo.db",
        "artifacts/ab/cd",
        ".venv/bin/python",
        "service/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert dockerignored(kept_out, patterns), kept_out


# -- the commands, for real, against PostgreSQL -------------------------------------------------

_BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the server image)")
        return None

sys.meta_path.insert(0, Blocked())
"""


def as_in_the_server_image(code: str) -> list[str]:
    """`python -c code` where the modules the server image leaves out cannot be imported."""
    return [sys.executable, "-c", _BLOCKER.format(blocked=server_image_leaves_out()) + code]


def hpo_as_in_the_server_image(argv: list[str]) -> list[str]:
    """`hpo ...` from the compose file, as the server image would run it."""
    assert argv[0] == "hpo"
    run = 'sys.argv = ["hpo", *sys.argv[1:]]\n'
    run += 'import runpy; runpy.run_module("service.cli", run_name="__main__", alter_sys=True)\n'
    return [*as_in_the_server_image(run), *argv[1:]]


def hpo(argv: list[str]) -> list[str]:
    assert argv[0] == "hpo"
    return [sys.executable, "-m", "service.cli", *argv[1:]]


def test_every_server_module_imports_without_torch(tmp_path: Path) -> None:
    """Each module of `service` imports, and the app builds, with no torch to import."""
    code = f"""
import importlib, pkgutil, service
for module in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(module.name)
from service.app import create_app
from service.settings import Settings
create_app(Settings(database_url="sqlite:///{tmp_path}/hpo.db"))
try:
    import torch
except ModuleNotFoundError as exc:
    print(exc)
"""
    result = subprocess.run(
        as_in_the_server_image(code), capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "No module named 'torch' (not in the server image)\n"


class ComposeStack:
    """The compose file's services as processes here: PostgreSQL from the test, the rest real."""

    def __init__(self, processes: Processes, tmp_path: Path, database_url: str) -> None:
        self.processes, self.tmp_path = processes, tmp_path
        self.services = compose()["services"]
        # Where the containers' database, volumes and server are, seen from this machine.
        self.here = {
            "HPO_DATABASE_URL": database_url,
            "HPO_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "HPO_DATA_DIR": str(tmp_path / "data"),
        }

    def env(self, service: str) -> dict[str, str]:
        """The service's environment from the compose file (paths and URL mapped to here), on
        top of this process's environment without its HPO_* variables."""
        env = environment(self.services[service])
        env.update({k: v for k, v in self.here.items() if k in env})
        return {**{k: v for k, v in os.environ.items() if not k.startswith("HPO_")}, **env}

    def migrate(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            hpo_as_in_the_server_image(self.services["migrate"]["command"]),
            env=self.env("migrate"),
            capture_output=True,
            text=True,
            cwd=self.tmp_path,
            timeout=120,
        )

    def server(self) -> tuple[subprocess.Popen[bytes], str]:
        """The server's command on a free loopback port, without torch; waits for its
        healthcheck (the compose file's own command) to pass."""
        port = free_port()
        argv = replace_option(self.services["server"]["command"], "--host", "127.0.0.1")
        argv = replace_option(argv, "--port", str(port))
        proc = self.processes.spawn(
            "server", hpo_as_in_the_server_image(argv), self.env("server"), cwd=self.tmp_path
        )
        check = [
            a.replace(":8000/", f":{port}/") for a in self.services["server"]["healthcheck"]["test"]
        ]
        assert check[:2] == ["CMD", "python"]

        def healthy() -> bool:
            assert proc.poll() is None, self.processes.log("server")
            return subprocess.run([sys.executable, *check[2:]], capture_output=True).returncode == 0

        wait_for(healthy, 60, "the server's healthcheck to pass", every=0.5)
        return proc, f"http://127.0.0.1:{port}"

    def worker(self, url: str) -> subprocess.Popen[bytes]:
        """The worker's command against `url`, on the CPU instead of every GPU."""
        argv = replace_option(self.services["worker"]["command"], "--server", url)
        argv = replace_option(argv, "--devices", "cpu")
        return self.processes.spawn("worker", hpo(argv), self.env("worker"), cwd=self.tmp_path)


@pytest.mark.e2e
def test_the_compose_commands_work_against_postgresql(processes: Processes, tmp_path: Path) -> None:
    values = example()
    user = {"Authorization": f"Bearer {values['HPO_API_TOKEN']}"}
    with postgres_database() as database_url:
        stack = ComposeStack(processes, tmp_path, database_url)
        engine = create_engine(database_url)
        try:
            migrate = stack.migrate()
            assert migrate.returncode == 0, migrate.stderr
            assert re.fullmatch(
                r"database postgresql\+psycopg://[^:/]+:\*\*\*@\S+ is up to date\n", migrate.stdout
            ), migrate.stdout
            assert f":{make_url(database_url).password}@" not in migrate.stderr
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM hpo_alembic_version")).scalar()

            server, url = stack.server()
            assert httpx.get(f"{url}/api/v1/studies").status_code == 401
            doc = spec_doc("compose", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 1})
            reply = httpx.post(f"{url}/api/v1/studies", json=doc, headers=user, timeout=30)
            assert reply.status_code == 201, reply.text

            worker = stack.worker(url)

            def workers() -> list[dict[str, Any]]:
                listed: list[dict[str, Any]] = httpx.get(
                    f"{url}/api/v1/workers", headers=user
                ).json()
                return listed

            # One worker command: on the CPU a slot per core, each a worker of its own.
            slots = usable_cores()

            def all_slots() -> bool:
                return len([w for w in workers() if w["state"] == "active"]) == slots

            wait_for(all_slots, 90, f"the worker's {slots} slots")
            listed = [(w["device"], w["state"], w["slots"]) for w in workers()]
            assert listed == [("cpu", "active", slots)] * slots

            def completed() -> dict[str, Any] | None:
                got = httpx.get(f"{url}/api/v1/studies/{reply.json()['id']}", headers=user).json()
                return got if got["state"] == "completed" else None

            assert wait_for(completed, 120, "the study to complete")["counts"]["completed"] == 1
            metrics = dict(
                line.rsplit(" ", 1)
                for line in httpx.get(f"{url}/metrics", headers=user).text.splitlines()
                if line and not line.startswith("#")
            )
            assert float(metrics['hpo_trials{state="completed"}']) == 1
            assert float(metrics['hpo_workers{state="active"}']) == slots

            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
            assert [w["state"] for w in workers()] == ["gone"] * slots
            server.send_signal(signal.SIGTERM)
            server.wait(30)

            # It all went to PostgreSQL, not to a SQLite file beside the processes.
            with engine.connect() as conn:
                state = conn.execute(text("SELECT state FROM hpo_studies WHERE name = 'compose'"))
                assert state.scalar() == "completed"
            assert not list(tmp_path.glob("*.db"))
        finally:
            engine.dispose()

    # Both logged JSON lines (the compose file asks for them) without a token or a password.
    for name in ("server", "worker"):
        output = processes.log(name)
        assert output, name
        for line in output.splitlines():
            assert json.loads(line)["msg"], (name, line)
        for secret in SECRETS:
            assert values[secret] not in output, (name, secret)


def test_the_postgres_healthcheck_command_works() -> None:
    if shutil.which("pg_isready") is None:
        pytest.skip("pg_isready is not installed here")
    admin = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail("HPO_REQUIRE_POSTGRES is set but HPO_TEST_POSTGRES_URL is not")
        pytest.skip("set HPO_TEST_POSTGRES_URL to check the healthcheck against PostgreSQL")
    url = make_url(admin)
    test = compose()["services"]["postgres"]["healthcheck"]["test"]
    env = {
        **os.environ,
        "POSTGRES_USER": url.username or "",
        "POSTGRES_DB": url.database or "",
        "PGHOST": url.host or "",
        "PGPORT": str(url.port or 5432),
    }
    assert subprocess.run(["sh", "-c", test[1]], env=env).returncode == 0
    env["PGPORT"] = str(free_port())  # nothing listens there: the check must say unhealthy
    assert subprocess.run(["sh", "-c", test[1]], env=env, capture_output=True).returncode != 0
