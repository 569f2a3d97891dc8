"""The database goes away under a running study, or is not there yet when the service starts.

On a cluster PostgreSQL restarts, fails over and drops connections. These tests do it to a real
server: a PostgreSQL cluster of the test's own (its own data folder and port, so that stopping it
leaves the shared server on 5432 alone) stopped for 20 s mid-study and started again; every
server connection killed from the database side; and `hpo db upgrade` and `hpo server` started
before their database exists. The API answers 503 while the database is away, and the study
completes with every trial and every epoch exactly once, without a server restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text

from tests.conftest import Processes, free_port, postgres_database, spec_doc, wait_for
from tests.reliability.conftest import completed_once_each, get, wait_mid_way

EPOCHS = 4
TRIALS = 4
WORKERS = 2
# About half a second per epoch on one CPU thread: trials are mid-way when the database goes.
WORKLOAD = {"model": "mlp", "dataset": "synthetic", "n_samples": 60000, "width": 256}
OUTAGE_SECONDS = 20.0


def _postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _as_postgres(*command: str) -> str:
    result = subprocess.run([*AS_POSTGRES, *command], capture_output=True, text=True)
    assert result.returncode == 0, f"{command[0]} failed: {result.stdout}{result.stderr}"
    return result.stdout


def _own_folder(prefix: str) -> Path:
    """A temporary folder the postgres user owns (PostgreSQL and PgBouncer refuse root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


class Cluster:
    """A throwaway PostgreSQL cluster: `initdb` in a temporary folder, run by the postgres user
    when the tests run as root (PostgreSQL refuses root), on its own loopback port. With
    `standby_of`, a streaming replica of that cluster (`pg_basebackup -R`) instead."""

    def __init__(self, bin_dir: Path, port: int, standby_of: Cluster | None = None) -> None:
        self.bin = bin_dir
        self.port = port
        self.dir = _own_folder("hpo-pg-")
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://hpo@127.0.0.1:{port}/postgres"
        if standby_of is None:
            self._run("initdb", "-D", str(self.data), "-U", "hpo", "-A", "trust", "--no-sync")
        else:
            source = ["-h", "127.0.0.1", "-p", str(standby_of.port), "-U", "hpo"]
            self._run("pg_basebackup", "-D", str(self.data), *source, "-R", "-X", "stream")

    def _run(self, tool: str, *args: str) -> None:
        _as_postgres(str(self.bin / tool), *args)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(text(statement))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def crash(self) -> None:
        """Stop at once, as a power cut would (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _require_postgres_programs() -> Path:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail("HPO_REQUIRE_POSTGRES is set but PostgreSQL's programs are not installed")
        pytest.skip("PostgreSQL's programs (initdb, pg_ctl) are not installed")
    return bin_dir


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, not started yet."""
    made = Cluster(_require_postgres_programs(), free_port())
    try:
        yield made
    finally:
        made.remove()


class PgBouncer:
    """PgBouncer (Debian's) on its own port in front of one cluster; `point_at` another cluster
    and reload, as an operator or a failover manager does when it promotes a replica."""

    def __init__(self, port: int, database_port: int) -> None:
        self.port = port
        self.dir = _own_folder("hpo-pgbouncer-")
        self.ini = self.dir / "pgbouncer.ini"
        self.url = f"postgresql+psycopg://hpo@127.0.0.1:{port}/postgres"
        (self.dir / "userlist.txt").write_text('"hpo" ""\n')
        self._write(database_port)
        _as_postgres("pgbouncer", "-d", str(self.ini))
        wait_for(lambda: (self.dir / "pgbouncer.pid").exists(), 10, "pgbouncer to start")

    def _write(self, database_port: int) -> None:
        self.ini.write_text(
            "[databases]\n"
            f"postgres = host=127.0.0.1 port={database_port} dbname=postgres user=hpo\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'userlist.txt'}\n"
            # Session pooling: psycopg prepares statements, which transaction pooling breaks.
            "pool_mode = session\nserver_reset_query = DISCARD ALL\n"
            "ignore_startup_parameters = extra_float_digits\n"
            # While no database answers, give up on a waiting client after 10 s (the default
            # holds it 120 s, and the API request with it) and retry the database every second.
            "query_wait_timeout = 10\nserver_login_retry = 1\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\nlogfile = {self.dir / 'pgbouncer.log'}\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.ini, "postgres", "postgres")

    def point_at(self, database_port: int) -> None:
        self._write(database_port)
        os.kill(int((self.dir / "pgbouncer.pid").read_text()), signal.SIGHUP)  # reload

    def stop(self) -> None:
        pid = self.dir / "pgbouncer.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(url: str, path: str = "/api/v1/studies") -> bool:
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _submit(processes: Processes, tmp_path: Path, url: str, name: str) -> None:
    budget = {"max_trials": TRIALS, "parallel_trials": WORKERS, "epochs": EPOCHS}
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(spec_doc(name, budget=budget, workload=WORKLOAD)))
    processes.start("submit", "submit", str(spec), "--server", url, "--wait")


def _assert_completed_exactly_once(processes: Processes, url: str, name: str) -> None:
    """`hpo submit --wait` ends well; every trial completed with epochs 1..EPOCHS once each."""
    submit = processes.procs[-1]
    assert submit.wait(300) == 0, processes.log("submit")
    assert f"study '{name}' completed" in processes.log("submit")
    with httpx.Client(base_url=url, timeout=30) as http:
        completed_once_each(http, 1, TRIALS, EPOCHS)
    logs = "".join(processes.log(f"w{i}") for i in range(WORKERS))
    assert logs.count("completed in") == TRIALS


@pytest.mark.e2e
@pytest.mark.slow
def test_postgres_stopped_20_s_mid_study_answers_503_and_the_study_completes(
    processes: Processes, tmp_path: Path, cluster: Cluster
) -> None:
    cluster.start()
    env = {"HPO_DATABASE_URL": cluster.url}
    url = processes.server(**env)
    workers = [processes.worker(f"w{i}", url) for i in range(WORKERS)]
    _submit(processes, tmp_path, url, "outage")
    with httpx.Client(base_url=url, timeout=30) as http:
        wait_mid_way(http)
        cluster.stop()
        stopped_at = time.monotonic()
        reply = http.get("/api/v1/studies/1")
        assert reply.status_code == 503, reply.text
        assert reply.headers["retry-after"] == "1"
        assert "database" in reply.json()["detail"]
        assert http.get("/healthz").status_code == 200  # the process itself is alive
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
        assert http.get("/api/v1/studies/1").status_code == 503
        cluster.start()
        wait_for(lambda: http.get("/api/v1/studies/1").status_code == 200, 30, "the API back")
    _assert_completed_exactly_once(processes, url, "outage")
    assert processes.procs[0].poll() is None  # the same server process, never restarted
    assert all(worker.poll() is None for worker in workers)  # they waited on their own
    processes.stop_all()
    assert "Traceback" not in "".join(processes.log(f"w{i}") for i in range(WORKERS))


@pytest.mark.e2e
@pytest.mark.slow
def test_every_server_connection_killed_by_the_database_loses_nothing(
    processes: Processes, tmp_path: Path
) -> None:
    with postgres_database() as database:
        url = processes.server(HPO_DATABASE_URL=database)
        for i in range(WORKERS):
            processes.worker(f"w{i}", url)
        _submit(processes, tmp_path, url, "terminated")
        admin = create_engine(database, isolation_level="AUTOCOMMIT")
        killed = 0
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                wait_mid_way(http)
                for _ in range(3):  # three times, a second apart, while trials train
                    with admin.connect() as conn:
                        killed += conn.execute(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            )
                        ).scalar_one()
                    time.sleep(1)
            _assert_completed_exactly_once(processes, url, "terminated")
            assert processes.procs[0].poll() is None  # the same server process throughout
        finally:
            admin.dispose()
            processes.stop_all()  # before the database goes away under them
    assert killed >= 3  # the server held connections each time


@pytest.mark.e2e
def test_migration_and_server_started_before_the_database_wait_for_it(
    processes: Processes, cluster: Cluster
) -> None:
    env = {"HPO_DATABASE_URL": cluster.url}
    upgrade = processes.start("upgrade", "db", "upgrade", "--wait-seconds", "60", **env)
    port = free_port()
    server = processes.start("server", "server", "--port", str(port), **env)
    wait_for(
        lambda: (
            "waiting up to 60 s for database" in processes.log("upgrade")
            and "waiting up to 60 s for database" in processes.log("server")
        ),
        30,
        "both to say they wait",
    )
    time.sleep(3)
    assert upgrade.poll() is None and server.poll() is None  # still waiting, not failed
    cluster.start()
    assert upgrade.wait(60) == 0, processes.log("upgrade")
    out = processes.log("upgrade")
    assert out.count("waiting up to 60 s") == 1  # one line, not one per try
    assert (
        f"database postgresql+psycopg://hpo@127.0.0.1:{cluster.port}/postgres is up to date" in out
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), 60, "the server to answer once the database is up")
    with httpx.Client(base_url=url, timeout=10) as http:
        assert get(http, "/api/v1/studies") == []


def test_a_database_that_never_comes_is_a_one_line_error_after_the_wait(
    processes: Processes,
) -> None:
    url = f"postgresql+psycopg://hpo:secret@127.0.0.1:{free_port()}/hpo"
    started = time.monotonic()
    upgrade = processes.start(
        "upgrade", "db", "upgrade", "--wait-seconds", "2", HPO_DATABASE_URL=url
    )
    assert upgrade.wait(30) == 1
    assert time.monotonic() - started >= 2
    lines = processes.log("upgrade").strip().splitlines()
    assert lines[0].startswith("waiting up to 2 s for database postgresql+psycopg://hpo:***@")
    assert lines[-1].startswith("error: database postgresql+psycopg://hpo:***@127.0.0.1:")
    assert "is not available after 2 s: " in lines[-1] and "Connection refused" in lines[-1]
    assert len(lines) == 2 and "secret" not in processes.log("upgrade")


@pytest.mark.e2e
@pytest.mark.slow
def test_failover_to_a_promoted_replica_behind_pgbouncer_loses_nothing(
    processes: Processes, tmp_path: Path
) -> None:
    """The server's URL names PgBouncer; behind it the primary crashes (immediate stop), its
    synchronous replica is promoted and PgBouncer is pointed at it, as a failover manager does.
    The same server process carries on: API 503 meanwhile, then every trial and epoch once."""
    if shutil.which("pgbouncer") is None:
        if os.environ.get("HPO_REQUIRE_PGBOUNCER"):
            pytest.fail("HPO_REQUIRE_PGBOUNCER is set but pgbouncer is not installed")
        pytest.skip("pgbouncer is not installed (Debian's package pgbouncer)")
    bin_dir = _require_postgres_programs()
    primary = Cluster(bin_dir, free_port())
    clusters, bouncer = [primary], None
    try:
        primary.start()
        replica = Cluster(bin_dir, free_port(), standby_of=primary)
        clusters.append(replica)
        replica.start()
        # Synchronous: a commit the server saw is on the replica too, so a crash loses none.
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.sql("SELECT pg_reload_conf()")
        wait_for(
            lambda: primary.sql("SELECT sync_state FROM pg_stat_replication") == [("sync",)],
            30,
            "the replica to be synchronous",
        )
        bouncer = PgBouncer(free_port(), primary.port)
        url = processes.server(HPO_DATABASE_URL=bouncer.url)
        for i in range(WORKERS):
            processes.worker(f"w{i}", url)
        _submit(processes, tmp_path, url, "failover")
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_mid_way(http)
            primary.crash()
            assert http.get("/api/v1/studies/1").status_code == 503
            time.sleep(3)  # a failover manager notices, then promotes
            replica.promote()
            bouncer.point_at(replica.port)
            wait_for(lambda: http.get("/api/v1/studies/1").status_code == 200, 30, "the API")
        _assert_completed_exactly_once(processes, url, "failover")
        assert processes.procs[0].poll() is None  # the same server process throughout
        assert replica.sql("SELECT pg_is_in_recovery()") == [(False,)]
    finally:
        processes.stop_all()
        if bouncer is not None:
            bouncer.stop()
        for made in clusters:
            made.remove()


def test_wrong_credentials_are_not_waited_for(processes: Processes) -> None:
    with postgres_database() as database:
        wrong = make_url(database).set(password="not-the-password")
        url = wrong.render_as_string(hide_password=False)
        started = time.monotonic()
        upgrade = processes.start("upgrade", "db", "upgrade", HPO_DATABASE_URL=url)
        assert upgrade.wait(30) == 1
    assert time.monotonic() - started < 10  # not the 60 s of waiting
    out = processes.log("upgrade")
    assert "waiting" not in out and "not-the-password" not in out
    assert out.startswith("error: database postgresql+psycopg://") and ":***@" in out
    assert "password authentication failed" in out
