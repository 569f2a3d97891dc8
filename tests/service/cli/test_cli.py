"""The `hpo` command line as a user runs it: exit codes and the one line that explains."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Processes, free_port, hpo_command, spec_doc


def _hpo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hpo_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _write(tmp_path: Path, doc: object, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_missing_spec_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _hpo("submit", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: cannot read") and "nope.yaml" in result.stderr


def test_unparsable_spec_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    result = _hpo("submit", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "broken.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = _hpo(
        "submit",
        str(_write(tmp_path, spec_doc())),
        "--server",
        f"http://127.0.0.1:{port}",
        "--retry-seconds",
        "1",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: cannot reach the hpo server at http://127.0.0.1:{port} "
        f"(ConnectError: [Errno 111] Connection refused)"
    )


def test_worker_with_unreachable_server_exits_1(tmp_path: Path) -> None:
    port = free_port()
    result = _hpo(
        "worker", "--server", f"http://127.0.0.1:{port}", "--devices", "cpu", "--retry-seconds", "1"
    )
    assert result.returncode == 1
    assert f"error: cannot reach the hpo server at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_devices_is_one_line() -> None:
    result = _hpo("worker", "--devices", "gpu-please")
    assert result.returncode == 1
    assert result.stderr.startswith("error: --devices must be")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--slots", "0"), ("--slots", "-2"), ("--threads", "0")]
)
def test_a_slot_or_thread_count_below_1_is_one_line(flag: str, value: str) -> None:
    result = _hpo("worker", "--devices", "cpu", flag, value, "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr == f"error: {flag} must be at least 1; got {value}\n"


def test_a_device_outside_cuda_visible_devices_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    result = _hpo("worker", "--devices", "2", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: --devices names CUDA device 2")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "HPO_LEASE_SECONDS",
            "soon",
            "HPO_LEASE_SECONDS must be a number of at least 0.1; got 'soon'",
        ),
        ("HPO_MAX_ATTEMPTS", "0", "HPO_MAX_ATTEMPTS must be an integer of at least 1; got '0'"),
        ("HPO_MAX_ATTEMPTS", "2.5", "HPO_MAX_ATTEMPTS must be an integer of at least 1; got '2.5'"),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = _hpo("server", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr == f"error: {message}\n"


@pytest.mark.parametrize("command", ["worker", "submit"])
def test_a_server_that_is_not_a_url_is_one_line(command: str, tmp_path: Path) -> None:
    args = [str(_write(tmp_path, spec_doc()))] if command == "submit" else []
    result = _hpo(command, *args, "--server", "127.0.0.1:8000")
    assert result.returncode == 1
    assert result.stderr == (
        "error: --server must be an http:// or https:// URL such as http://127.0.0.1:8000; "
        "got '127.0.0.1:8000'\n"
    )


def test_server_worker_and_submit_share_their_options() -> None:
    for command in ("worker", "submit"):
        help_text = _hpo(command, "--help").stdout
        assert "--server SERVER" in help_text and "--retry-seconds RETRY_SECONDS" in help_text
    assert "(default: $HPO_WORKER_TOKEN)" in _hpo("worker", "--help").stdout
    assert "(default: $HPO_API_TOKEN)" in _hpo("submit", "--help").stdout
    for command in ("server", "worker"):
        assert "--log-format {text,json}" in _hpo(command, "--help").stdout


def test_server_refuses_a_public_address_without_tokens() -> None:
    result = _hpo("server", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert "HPO_API_TOKEN" in result.stderr and "HPO_WORKER_TOKEN" in result.stderr


@pytest.mark.e2e
def test_submit_invalid_spec_prints_the_servers_reasons(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server()
    doc = spec_doc(space={"lr": {"type": "float", "low": 1.0, "high": 0.1}})
    result = _hpo("submit", str(_write(tmp_path, doc)), "--server", url)
    assert result.returncode == 1
    assert "space.lr.high" in result.stderr and "greater than" in result.stderr


@pytest.mark.e2e
def test_submit_wait_shows_progress_and_the_best_trial(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server()
    processes.worker("w", url)
    doc = spec_doc("cli", budget={"max_trials": 3, "parallel_trials": 1, "epochs": 2})
    result = _hpo("submit", str(_write(tmp_path, doc)), "--server", url, "--wait")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "study 1 'cli' created" in out
    assert "3/3 trials done" in out
    assert "study 'cli' completed" in out
    assert "best trial #" in out and "val_accuracy=" in out
    duplicate = _hpo("submit", str(_write(tmp_path, doc)), "--server", url)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


@pytest.mark.e2e
def test_bad_token_is_one_line_and_exit_1(processes: Processes, tmp_path: Path) -> None:
    url = processes.server(HPO_API_TOKEN="right-user-token", HPO_WORKER_TOKEN="worker-token")
    spec = str(_write(tmp_path, spec_doc()))
    result = _hpo("submit", spec, "--server", url, "--token", "wrong")
    assert result.returncode == 1
    assert result.stderr.startswith("error: the server refused the token (401)")
    assert result.stderr.strip().count("\n") == 0
    ok = _hpo("submit", spec, "--server", url, "--token", "right-user-token")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.e2e
def test_server_stops_on_sigterm_while_a_page_follows_its_events(processes: Processes) -> None:
    import signal
    import threading
    import time

    import httpx

    url = processes.server()
    study = httpx.post(f"{url}/api/v1/studies", json=spec_doc()).json()
    opened = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream(
                "GET", f"{url}/api/v1/studies/{study['id']}/events", timeout=60
            ) as stream:
                for _ in stream.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    assert opened.wait(30)
    server = processes.procs[0]
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once shut down, so the exit reads "killed by SIGTERM"
    assert server.wait(20) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 15  # without a bound it waited for the stream forever
