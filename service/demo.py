"""`hpo demo`: a real server and a real worker on local SQLite, one example study, the result.

Everything runs as separate processes exactly as a user would start them, so the demo shows the
product, not a shortcut through it. The worker is one `hpo worker --devices cpu` command with its
default slots, one per physical core, so the demo trains as many trials at once as the machine
has cores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from hpo.client import Client, ServerUnreachable
from service.cli import CliError, load_spec_file, submit


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` right now (the tests and benches use it too)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _hpo(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def _wait_healthy(client: Client, server: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CliError("the demo server exited during start-up (see its message above)")
        try:
            client.health()
            return
        except ServerUnreachable:
            time.sleep(0.2)
    raise CliError(f"the demo server did not answer within {seconds:.0f} s")


class _Terminated(Exception):
    """SIGTERM reached the demo: it stops its worker and server, as on Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _stop(proc: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_slots(client: Client, worker: subprocess.Popen[bytes], seconds: float) -> int:
    """How many slots the demo's worker command started, once all of them have registered.
    Raises CliError when the worker exits or does not register in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise CliError("the demo worker exited during start-up (see its message above)")
        active = [w for w in client.workers() if w["state"] == "active"]
        if active and len(active) >= active[0]["slots"]:
            return int(active[0]["slots"])
        time.sleep(0.2)
    raise CliError(f"the demo worker did not register within {seconds:.0f} s")


def run_demo(
    spec_path: Path, database: str, port: int = 0, keep: bool = False, fill_slots: bool = False
) -> int:
    """Run the study of `spec_path` end to end; with `fill_slots` (the example study) it trains
    at least as many trials at once as the worker has slots."""
    document = load_spec_file(spec_path)
    document["name"] = f"{document.get('name', 'demo')}-{datetime.now():%Y%m%d-%H%M%S}"
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HPO_DATABASE_URL": database}
    print(f"starting hpo server at {url} on {database}")
    # SIGTERM (a `kill`, a service manager, a test's clean-up) stops the server and the worker
    # too: its default would end the demo alone and leave them running, the worker retrying a
    # server that is gone.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    server = subprocess.Popen(_hpo("server", "--port", str(port)), env=env)
    worker: subprocess.Popen[bytes] | None = None
    client = Client(url, retry_seconds=2.0)
    try:
        _wait_healthy(client, server, 60.0)
        print("starting one worker on the CPU, one slot per core")
        worker = subprocess.Popen(_hpo("worker", "--server", url, "--devices", "cpu"), env=env)
        slots = _wait_slots(client, worker, 120.0)
        budget = document.setdefault("budget", {})
        if fill_slots:
            budget["parallel_trials"] = max(budget.get("parallel_trials", 1), slots)
        at_once = min(slots, budget.get("parallel_trials", 1))
        print(
            f"the worker started {slots} slot{'s' if slots > 1 else ''} (one torch thread each): "
            f"{at_once} trial{'s' if at_once > 1 else ''} at a time"
        )
        print(f"open {url}/ to watch the study live")
        study = submit(client, document, wait=True)
        print(f"\nthe page: {url}/#/studies/{study['id']}")
        if keep:
            print("serving until Ctrl-C")
            server.wait()
        else:
            print(f"to browse the results later: hpo server --database-url {database}")
        return 0 if study["state"] == "completed" else 1
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up
        client.close()
        if worker is not None:
            _stop(worker)
        _stop(server)
        signal.signal(signal.SIGTERM, previous)
