"""Real `hpo server` and `hpo worker` processes, as a user starts them: the one server launcher
and the one port helper of the tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from service.demo import free_port

__all__ = ["Processes", "free_port", "healthy", "hpo_command"]

ROOT = Path(__file__).resolve().parent.parent.parent


def hpo_command(*args: str) -> list[str]:
    """`hpo ARGS...` with this interpreter (the console script of the same installation)."""
    return [sys.executable, "-m", "service.cli", *args]


def healthy(url: str) -> bool:
    """Whether the server at `url` answers /healthz with 200 (False while it is not up yet)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


Process = subprocess.Popen[bytes]


class Processes:
    """Real processes logged to `<folder>/<name>.log` and stopped (SIGTERM, then SIGKILL after
    20 s) by `stop_all` or at the end of a `with` block. By default they share a fresh SQLite
    file and artifacts folder in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[Process] = []
        self.named: dict[str, Process] = {}
        self.env = {
            **os.environ,
            "HPO_DATABASE_URL": f"sqlite:///{folder / 'hpo.db'}",
            "HPO_ARTIFACTS_DIR": str(folder / "artifacts"),
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def tmp_path(self) -> Path:  # the name the tests knew it by
        return self.folder

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Process:
        """Run `argv` with exactly `env`, its output in `<name>.log`."""
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.procs.append(proc)
        self.named[name] = proc
        return proc

    def start(self, name: str, *args: str, **env: str) -> Process:
        """`hpo ARGS...` on the shared environment plus `env`."""
        return self.spawn(name, hpo_command(*args), {**self.env, **env})

    def process(self, name: str) -> Process:
        """The process last started under `name`."""
        return self.named[name]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def server(
        self,
        name: str = "server",
        *args: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        timeout: float = 60,
        **env: str,
    ) -> str:
        """Start `hpo server ARGS...` on `host` and `port` (a free one by default; a given one
        to restart a server where its workers look for it), wait until /healthz answers, and
        return its URL. Raises AssertionError with the log when it exits or never answers."""
        port = port or free_port(host)
        proc = self.start(name, "server", "--host", host, "--port", str(port), *args, **env)
        url = f"http://{host}:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if healthy(url):
                return url
            time.sleep(0.1)
        raise AssertionError(
            f"{name} did not answer /healthz in {timeout:.0f} s:\n" + self.log(name)
        )

    def worker(self, name: str, url: str, *args: str, **env: str) -> Process:
        """`hpo worker` against `url` on the CPU with one torch thread, plus `args`."""
        return self.start(
            name, "worker", "--server", url, "--devices", "cpu", "--threads", "1", *args, **env
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
