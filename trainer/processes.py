"""`hpo worker`'s processes: one per device, each running a `trainer.worker.DeviceWorker`.

Apart from the per-trial logic because this is process plumbing: resolving `--devices`, logging,
signals, spawning a process per device and re-executing one that memory hygiene asks to start
afresh (`os.execv` of the `hpo worker` command line that serves its device alone).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from hpo import config
from hpo.client import ApiError, ServerUnreachable
from hpo.logs import configure
from trainer.client import WorkerClient
from trainer.fused.options import group_size
from trainer.fused.options import parse_fuse as parse_fuse  # `hpo worker --fuse` reads it here
from trainer.worker import DeviceWorker

# The per-trial logic's logger: a worker's lines read as one stream, whichever module wrote them.
log = logging.getLogger("hpo.worker")


def resolve_devices(devices: str) -> list[str]:
    """`auto` → every CUDA device, else the CPU; `cpu`; or CUDA indices such as `0,1`."""
    spec = devices.strip().lower()
    if spec == "cpu":
        return ["cpu"]
    if spec == "auto":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(
            f"--devices must be auto, cpu or CUDA indices like 0,1; got {devices!r}"
        ) from exc
    if not indices or len(set(indices)) != len(indices) or min(indices) < 0:
        raise ValueError(f"--devices must list distinct CUDA indices like 0,1; got {devices!r}")
    return [f"cuda:{i}" for i in indices]


def cuda_visible_for(index: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value that leaves a process only CUDA device `index`, numbered
    as PyTorch numbers the devices this process sees: within a CUDA_VISIBLE_DEVICES already set
    (by Slurm, Kubernetes or the user), index 1 of "2,3" is GPU 3, not GPU 1.

    Raises ValueError when `visible` makes fewer devices visible than `index` needs.
    """
    if visible is None:
        return str(index)
    entries = [entry.strip() for entry in visible.split(",")]
    if index >= len(entries):
        raise ValueError(
            f"--devices names CUDA device {index}, but CUDA_VISIBLE_DEVICES={visible!r} "
            f"makes only {len(entries)} visible"
        )
    return entries[index]


def combined_exit_code(codes: list[int | None]) -> int:
    """The worst of the device processes' exit codes. One killed by a signal (a negative code
    from multiprocessing) counts as 128 + the signal, as a shell reports it, so that a worker
    whose process the OOM killer took never exits 0."""
    return max(128 - code if code < 0 else code for code in (c or 0 for c in codes))


def _configure_logging(log_format: str, token: str | None) -> None:
    # `token` is redacted from every line, like the tokens in the environment.
    configure(
        log_format,
        "info",
        secrets=[token],
        text_format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per trial, not per request


@dataclass(frozen=True)
class WorkerOptions:
    """What `hpo worker` was told; each device process gets the same."""

    server: str
    token: str | None = None
    threads: int | None = None
    retry_seconds: float = config.RETRY_SECONDS
    log_format: str = config.DEFAULT_LOG_FORMAT
    max_trials_per_process: int | None = None
    fuse: int | None = None  # trials trained at once (trainer.fused); None: auto per device

    def command(self, device: str) -> list[str]:
        """The `hpo worker` command line that serves `device` alone (the token travels in the
        environment, never on a command line)."""
        devices = "cpu" if device == "cpu" else device.split(":", 1)[1]
        argv = [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--server",
            self.server,
            "--devices",
            devices,
            "--retry-seconds",
            str(self.retry_seconds),
            "--log-format",
            self.log_format,
        ]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        if self.max_trials_per_process:
            argv += ["--max-trials-per-process", str(self.max_trials_per_process)]
        if self.fuse is not None:  # None: the default, auto
            argv += ["--fuse", str(self.fuse)]
        return argv


def _device_main(options: WorkerOptions, device: str) -> int:
    """Body of one device process; returns its exit code, or replaces the process with a fresh
    one serving the same device when memory hygiene asks for it (same pid, clean memory)."""
    _configure_logging(options.log_format, options.token)
    served = device
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_for(index, visible)
        device = "cuda:0"
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    client = WorkerClient(options.server, token=options.token, retry_seconds=options.retry_seconds)
    fuse = group_size(device, options.fuse)
    worker = DeviceWorker(client, device, max_trials=options.max_trials_per_process, fuse=fuse)

    def on_signal(signum: int, _frame: Any) -> None:
        if worker.shutdown.is_set():
            raise SystemExit(1)  # second signal: leave now
        log.info("signal %d: finishing the current epoch, then releasing the trial", signum)
        worker.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run()
    except ServerUnreachable as exc:
        log.error("error: %s", exc)
        return 1
    except ApiError as exc:
        log.error("error: the server refused the worker: %s", exc)
        return 1
    finally:
        client.close()
    if worker.recycle:
        if options.token:
            os.environ[config.WORKER_TOKEN] = options.token
        # CUDA_VISIBLE_DEVICES now names this device alone: the fresh process serves index 0.
        command = options.command("cpu" if served == "cpu" else "cuda:0")
        os.execv(command[0], command)
    return 0


def run(options: WorkerOptions, devices: str = "auto") -> int:
    """Run one training process per device until SIGTERM / Ctrl-C; returns the exit code."""
    targets = resolve_devices(devices)
    for target in targets:  # a device that is not there is said before any process starts
        if target.startswith("cuda:"):
            cuda_visible_for(int(target.split(":", 1)[1]), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if len(targets) == 1:
        return _device_main(options, targets[0])
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_device_process, args=(options, d), name=f"hpo-worker-{d}")
        for d in targets
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return combined_exit_code([proc.exitcode for proc in procs])


def _device_process(options: WorkerOptions, device: str) -> None:
    sys.exit(_device_main(options, device))
