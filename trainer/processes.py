"""`hpo worker`'s processes: slots per device, each a process running a
`trainer.worker.DeviceWorker` that registers as a worker of its own.

Apart from the per-trial logic because this is process plumbing: resolving `--devices` and
`--slots` (`plan_slots`), logging, signals, and starting the slots. One slot runs in the command's
own process and re-executes itself (`os.execv` of the `hpo worker` command line that serves its
device alone) when memory hygiene asks for a fresh process. Several slots are child processes
of the command, which forwards its signals to them, starts a fresh one in place of a slot that
asks for it, and exits with the worst of their exit codes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from hpo import config
from hpo.client import ApiError, ServerUnreachable
from hpo.logs import configure
from trainer.client import WorkerClient
from trainer.cores import usable_cores
from trainer.fused.options import group_size
from trainer.fused.options import parse_fuse as parse_fuse  # `hpo worker --fuse` reads it here
from trainer.worker import DeviceWorker

# The per-trial logic's logger: a worker's lines read as one stream, whichever module wrote them.
log = logging.getLogger("hpo.worker")
# A slot's exit code that asks its command for a fresh process in its place (memory hygiene).
FRESH_PROCESS = 75
# What the kernel sends a slot when its command dies (Linux): a signal of its own, because it
# comes once per thread the dying command had, and repeats must not read as "leave now".
COMMAND_GONE = signal.SIGHUP


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
    """The worst of the slots' exit codes. One killed by a signal (a negative code from
    multiprocessing) counts as 128 + the signal, as a shell reports it, so that a worker whose
    process the OOM killer took never exits 0."""
    return max((128 - code if code < 0 else code for code in (c or 0 for c in codes)), default=0)


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
class Slot:
    """One training process of `hpo worker`: slot `index` of the `of` on `device`, with
    `threads` torch CPU threads (None: PyTorch's default)."""

    device: str  # "cpu" or "cuda:N", N counted as --devices counts it
    index: int = 0
    of: int = 1
    threads: int | None = None

    @property
    def label(self) -> str:
        """`cpu`, or `cpu#1` when the device has several slots."""
        return f"{self.device}#{self.index}" if self.of > 1 else self.device


def plan_slots(
    devices: list[str],
    slots: int | None = None,
    threads: int | None = None,
    cores: Callable[[], int] = usable_cores,
) -> list[Slot]:
    """The training processes of `hpo worker` on `devices` (from `resolve_devices`).

    On the CPU, by default one slot per physical core this process may use (`trainer.cores`),
    each with one torch thread. `--threads N` alone keeps one slot of N threads (the command
    line of the time before slots); `--slots N` alone shares the cores among the N slots
    (at least one thread each); both are taken as given. On CUDA the default is one slot per
    GPU, and `--threads` (unset: PyTorch's default) applies to each slot.

    Raises ValueError for a slot or thread count below 1.
    """
    if slots is not None and slots < 1:
        raise ValueError(f"--slots must be at least 1; got {slots}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1; got {threads}")
    plan: list[Slot] = []
    for device in devices:
        count, per_slot = slots or 1, threads
        if device == "cpu" and threads is None:
            available = cores()
            count = slots or available
            per_slot = max(1, available // count)
        plan += [Slot(device, i, count, per_slot) for i in range(count)]
    return plan


@dataclass(frozen=True)
class WorkerOptions:
    """What `hpo worker` was told; each slot gets the same."""

    server: str
    token: str | None = None
    threads: int | None = None
    retry_seconds: float = config.RETRY_SECONDS
    log_format: str = config.DEFAULT_LOG_FORMAT
    max_trials_per_process: int | None = None
    fuse: int | None = None  # trials trained at once (trainer.fused); None: auto per device
    slots: int | None = None  # per device; None: plan_slots's default

    def command(self, device: str, threads: int | None = None) -> list[str]:
        """The `hpo worker` command line that serves `device` alone, in one slot with `threads`
        torch threads (the token travels in the environment, never on a command line)."""
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
            "--slots",
            "1",
            "--retry-seconds",
            str(self.retry_seconds),
            "--log-format",
            self.log_format,
        ]
        if threads:
            argv += ["--threads", str(threads)]
        if self.max_trials_per_process:
            argv += ["--max-trials-per-process", str(self.max_trials_per_process)]
        if self.fuse is not None:  # None: the default, auto
            argv += ["--fuse", str(self.fuse)]
        return argv


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # Inter-op threads can be set only before torch's first parallel work; in a fresh process
    # nothing has run yet, so this takes, and a process that ran something keeps its own.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def _slot_main(options: WorkerOptions, slot: Slot, child: bool = False) -> int:
    """Body of one slot's process; returns its exit code. When memory hygiene asks for a fresh
    process, a slot in the command's own process replaces itself with one serving the same
    device (same pid, clean memory); a `child` slot returns FRESH_PROCESS, and its command
    starts a fresh one in its place."""
    _configure_logging(options.log_format, options.token)
    device = slot.device
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_for(index, visible)
        device = "cuda:0"
    if slot.threads:
        _limit_threads(slot.threads)
    client = WorkerClient(options.server, token=options.token, retry_seconds=options.retry_seconds)
    fuse = group_size(device, options.fuse)
    # A child registers as <host>:<its pid>/<device>#<slot>, as `hpo worker` alone would.
    name = f"{socket.gethostname()}:{os.getpid()}/{slot.label}" if child else None
    worker = DeviceWorker(
        client,
        device,
        name=name,
        max_trials=options.max_trials_per_process,
        fuse=fuse,
        slot=slot.index,
        slots=slot.of,
    )

    _handle_signals(worker, child)
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
        if child:
            return FRESH_PROCESS
        if options.token:
            os.environ[config.WORKER_TOKEN] = options.token
        # CUDA_VISIBLE_DEVICES now names this device alone: the fresh process serves index 0.
        command = options.command("cpu" if slot.device == "cpu" else "cuda:0", slot.threads)
        os.execv(command[0], command)
    return 0


def _handle_signals(worker: DeviceWorker, child: bool) -> None:
    """SIGTERM / Ctrl-C: finish the epoch, hand the trial back, leave; a second one: leave
    now. A `child` slot also takes COMMAND_GONE (its command died) as the first, however often
    it comes."""

    def on_signal(signum: int, _frame: Any) -> None:
        if worker.shutdown.is_set():
            raise SystemExit(1)  # second signal: leave now
        log.info("signal %d: finishing the current epoch, then releasing the trial", signum)
        worker.stop()

    def on_command_gone(_signum: int, _frame: Any) -> None:
        if not worker.shutdown.is_set():
            log.info("the hpo worker command is gone: finishing the epoch, releasing the trial")
            worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if child:
        signal.signal(COMMAND_GONE, on_command_gone)


def run(options: WorkerOptions, devices: str = "auto") -> int:
    """Run the slots of `devices` (see `plan_slots`) until SIGTERM / Ctrl-C; returns the exit
    code. Raises ValueError for devices, slots or threads that cannot be served."""
    targets = resolve_devices(devices)
    for target in targets:  # a device that is not there is said before any process starts
        if target.startswith("cuda:"):
            cuda_visible_for(int(target.split(":", 1)[1]), os.environ.get("CUDA_VISIBLE_DEVICES"))
    plan = plan_slots(targets, options.slots, options.threads)
    if len(plan) == 1:
        return _slot_main(options, plan[0])
    return Slots(options, plan).run()


class Slots:
    """Several slots as child processes of the command (see the module's docstring)."""

    def __init__(self, options: WorkerOptions, plan: list[Slot]) -> None:
        self.options = options
        self.plan = plan
        self.running: dict[int, BaseProcess] = {}  # by the slot's place in the plan
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> int:
        _configure_logging(self.options.log_format, self.options.token)
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        threads = self.plan[0].threads
        log.info(
            "starting %d slots (%s), %s torch thread%s each",
            len(self.plan),
            ", ".join(slot.label for slot in self.plan),
            threads or "default",
            "" if threads == 1 else "s",
        )
        for place in range(len(self.plan)):
            self._start(place)
        codes: list[int | None] = []
        while self.running:
            ended = set(wait([proc.sentinel for proc in self.running.values()]))
            for place, proc in list(self.running.items()):
                if proc.sentinel in ended:
                    proc.join()
                    del self.running[place]
                    codes += self._ended(place, proc.exitcode)
        return combined_exit_code(codes)

    def _start(self, place: int) -> None:
        slot = self.plan[place]
        proc = self._context.Process(
            target=_slot_process,
            args=(self.options, slot, os.getpid()),
            name=f"hpo-worker-{slot.label}",
        )
        # The slot starts with Ctrl-C ignored (the one disposition a fresh interpreter
        # inherits): until it leaves the terminal's process group and sets its own handlers,
        # a Ctrl-C that reaches it with its command would stop it mid-import with a traceback.
        # The command forwards every signal as SIGTERM, which a slot still starting dies of.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.running[place] = proc
        if self.stopping:  # a signal came while it started: it missed the forwarded one
            self._signal(proc, signal.SIGTERM)

    def _ended(self, place: int, code: int | None) -> list[int | None]:
        """What a slot's end adds to the command's exit codes; a fresh process replaces one
        that asked for it (unless the command is stopping)."""
        slot = self.plan[place]
        if code == FRESH_PROCESS:
            if not self.stopping:
                self._start(place)
                return []
            return [0]
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            # Stopped by the forwarded signal before its handler was set: it held nothing.
            return [0]
        if code and not self.stopping:
            log.error(
                "slot %s exited with code %s; the other slots go on (the command's exit code "
                "will say it)",
                slot.label,
                code,
            )
        return [code]

    def _forward(self, signum: int, _frame: Any) -> None:
        """SIGTERM or Ctrl-C: each slot gets SIGTERM, which means the same to a slot whose
        handlers are set (a second one: leave now) and ends one still starting, whose Ctrl-C
        is ignored until then."""
        if not self.stopping:
            log.info("signal %d: stopping the slots", signum)
        self.stopping = True
        for proc in self.running.values():
            self._signal(proc, signal.SIGTERM)

    @staticmethod
    def _signal(proc: BaseProcess, signum: int) -> None:
        if proc.pid is not None and proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)


def _slot_process(options: WorkerOptions, slot: Slot, command_pid: int) -> None:
    _follow_command(command_pid)
    sys.exit(_slot_main(options, slot, child=True))


def _follow_command(command_pid: int) -> None:
    """Signals reach a slot through its command alone: Ctrl-C in a terminal signals the whole
    process group, and a slot signalled by both would take the forwarded copy as the second
    signal that means "leave now". Out of the group, a slot would outlive a command that dies
    without forwarding (SIGKILL, a closed terminal), so on Linux the kernel sends it
    COMMAND_GONE then: it releases its trial and leaves like any stopped worker."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, COMMAND_GONE)  # PR_SET_PDEATHSIG
    if os.getppid() != command_pid:  # the command died before prctl took: nothing to release
        sys.exit(0)
