"""Training throughput of fused groups (trainer.fused) against the same trials trained one by
one with the unfused loop (trainer.train), on the same data, batch size and device.

    python bench/fused_throughput.py [--ks 1,2,4,8,16,32] [--epochs 3] [--device cpu]
                                     [--threads 1] [--cases mlp:digits:batch,...]
    python bench/fused_throughput.py --service [--model mlp --dataset digits --configs 64
                                     --epochs 10 --workers 2 --fuse 8,1 --device cpu|0]

For each case (model, dataset, norm) and group size K, a group of K trials (each its own seed,
lr, dropout and weight decay, as a random search draws them) trains `--epochs` epochs; its
figure is training samples per second over all K trials (K x training samples / epoch time).
K separate trainings take K times one trial's epoch time, so their samples per second are one
unfused trial's; an unfused epoch runs after each fused one, so other work on a shared machine
slows both alike. Figures are medians over epochs after the first (which pays one-time costs);
the ratio is the median of each fused epoch's figure over the unfused epoch's after it. The
same ratio in CPU time (this process's, `time.process_time`) leaves out the time other
processes on a shared machine take the core away; on a quiet machine the two agree (on CUDA,
where the host waits for the device, only the wall-clock ratio means anything).
Validation and reports are outside the measured time. On CUDA the table also gives the device's
busy fraction (torch.cuda.utilization, when the driver tells it). Prints a markdown table.

`--service` measures what users see instead: a real `hpo server` and `--workers` real `hpo worker`
processes (one torch thread each) run a random search of `--configs` configurations x `--epochs`
epochs over lr, dropout and weight decay (norm and batch size fixed; `--batch-sizes 32,64,128,256`
draws the batch size too, so that few leased trials can share a group), once per `--fuse` value
(`--device` is then the workers' `--devices`: cpu, or a CUDA index),
one after the other in one run. It prints configurations finished per hour, from the study's
creation to its end (the workers' start-up included: they start with the study) and from the
first trial's start to the last one's end (what long-lived workers give), the workers' CPU
seconds (their processes and training processes, start-up included, the server's not: what
other processes on a shared machine stretch less than wall time), the server's CPU seconds
during the study (read from /proc on Linux, else left blank: on a machine whose cores the
workers fill, the server's work is time taken from training), the distribution
of the final validation accuracies, and how far each
configuration's accuracy lies from the same configuration's under the first `--fuse` value (the
random search draws the same configurations in the same order in each study).
`--checkpoint-seconds 0,default` runs each `--fuse` value once per value in turn, the workload's
`checkpoint_seconds` set to it (0: a checkpoint after every epoch but the last, as before the
time cadence) or left at the tunable's default (`default`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import httpx
import torch
from reporting import machine, quantile  # bench/reporting.py

from tests.support.processes import Processes
from trainer.fused.loop import _fuse, _member, _train_epoch
from trainer.reporting import Reporter
from trainer.train import TrainConfig, build_run, train_epoch

DEFAULT_CASES = "mlp:digits:batch,mlp:digits:layer,cnn:mnist1d:batch,cnn:mnist1d:layer"


def configs(args: argparse.Namespace, case: str, k: int) -> list[TrainConfig]:
    model, dataset, norm = case.split(":")
    result = []
    for seed in range(k):
        params = {
            "norm": norm,
            "batch_size": args.batch_size,
            "lr": 10 ** (-3 + 1.5 * (seed % 7) / 7),
            "dropout": 0.05 + 0.4 * ((seed * 3) % 11) / 11,
            "weight_decay": 10 ** (-5 + 3 * ((seed * 5) % 13) / 13),
        }
        result.append(TrainConfig(model, dataset, args.epochs, params, seed, args.device))
    return result


def busy() -> float | None:
    if not torch.cuda.is_available():
        return None
    try:
        return torch.cuda.utilization() / 100
    except Exception:  # no NVML: the figure is left out
        return None


def measure(args: argparse.Namespace, case: str, k: int) -> dict[str, float | None]:
    trials = configs(args, case, k)
    group = _fuse([_member(c, Reporter(lambda e, m: None, None), None) for c in trials])
    single = build_run(trials[0])
    n_train = len(single.data.y_train)
    fused, alone, loads = [], [], []
    # The same ratio in this process's CPU time, which other processes do not stretch.
    cpu_ratios = []
    for epoch in range(1, args.epochs + 1):
        for member in group.members:
            member.done = epoch - 1
        cpu = time.process_time()
        _, _, seconds = _train_epoch(group)
        fused_cpu = time.process_time() - cpu
        loads.append(busy())
        fused.append(k * n_train / seconds)
        if single.data.x_train.is_cuda:
            torch.cuda.synchronize()
        started, cpu = time.perf_counter(), time.process_time()
        train_epoch(single, epoch)
        alone.append(n_train / (time.perf_counter() - started))
        cpu_ratios.append(k * (time.process_time() - cpu) / fused_cpu)
    fused_rate = statistics.median(fused[1:] or fused)
    alone_rate = statistics.median(alone[1:] or alone)
    # Each fused epoch against the unfused epoch right after it: load from other work on a
    # shared machine changes both alike.
    ratios = [f / a for f, a in zip(fused, alone, strict=True)]
    known = [load for load in loads[1:] if load is not None]
    return {
        "fused": fused_rate,
        "alone": alone_rate,
        "ratio": statistics.median(ratios[1:] or ratios),
        "cpu_ratio": statistics.median(cpu_ratios[1:] or cpu_ratios),
        "busy": statistics.median(known) if known else None,
    }


def batch_space(args: argparse.Namespace) -> dict:
    """`--batch-sizes 32,64,...`: the batch size drawn among them (it wins over the workload's),
    so that leased trials seldom share a fused group; none given: fixed."""
    if not args.batch_sizes:
        return {}
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    return {"batch_size": {"type": "categorical", "choices": sizes}}


def service_spec(args: argparse.Namespace, name: str, cadence: float | None = None) -> dict:
    spec: dict[str, Any] = {
        "name": name,
        "strategy": {"kind": "random", "seed": 0},
        "budget": {
            "max_trials": args.configs,
            "parallel_trials": args.configs,
            "epochs": args.epochs,
        },
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            **batch_space(args),
        },
        "workload": {
            "model": args.model,
            "dataset": args.dataset,
            "norm": args.norm,
            "batch_size": args.batch_size,
        },
    }
    if cadence is not None:
        spec["workload"]["checkpoint_seconds"] = cadence
    return spec


def run_study(
    processes: Processes,
    url: str,
    args: argparse.Namespace,
    fuse: str,
    index: int,
    cadence: float | None = None,
) -> dict:
    """The `index`th study, under workers started with `--fuse fuse`: its wall seconds, the
    seconds from its first trial's start to its last one's end, the workers' CPU seconds, and
    the final accuracy per trial number."""
    with httpx.Client(base_url=url, timeout=60) as http:
        spec = service_spec(args, f"fuse-{fuse}-{index}", cadence)
        study_id = http.post("/api/v1/studies", json=spec).json()["id"]
        started = time.monotonic()
        cpu = _children_cpu()
        server_cpu = _process_cpu(processes.process("server").pid)
        names = [f"fuse{fuse}-{index}-{i}" for i in range(args.workers)]
        for name in names:
            processes.worker(name, url, "--fuse", fuse, "--devices", args.device)
        while http.get(f"/api/v1/studies/{study_id}").json()["state"] == "running":
            time.sleep(0.5)
        seconds = time.monotonic() - started
        for name in names:
            processes.process(name).terminate()
        for name in names:
            processes.process(name).wait(60)
        # The workers (waited for above) and their training processes, start-up included;
        # the server's, which outlives the study, is not counted.
        worker_cpu = _children_cpu() - cpu
        server_cpu = _process_cpu(processes.process("server").pid) - server_cpu
        trials = http.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 1000}).json()
    done = [t for t in trials["items"] if t["state"] == "completed"]
    values = {t["number"]: t["value"] for t in done}
    # The workers' own time: from the first trial's start to the last one's end, without the
    # workers' start-up (process, PyTorch, warm-up), which a long-lived worker pays once.
    first = min((datetime.fromisoformat(t["started_at"]) for t in done), default=None)
    last = max((datetime.fromisoformat(t["finished_at"]) for t in done), default=None)
    training = (last - first).total_seconds() if first and last else float("nan")
    return {
        "seconds": seconds,
        "training": training,
        "values": values,
        "cpu": worker_cpu,
        "server_cpu": server_cpu,
    }


def _children_cpu() -> float:
    """User and system CPU seconds of this process's ended and waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """User and system CPU seconds of a running process (Linux's /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service(args: argparse.Namespace) -> None:
    cadences = [
        None if value.strip() == "default" else float(value)
        for value in args.checkpoint_seconds.split(",")
    ]
    # A value given twice (--fuse 8,1,8,1) runs twice: the machine's load drifts.
    plan = [(fuse, cadence) for fuse in args.fuse.split(",") for cadence in cadences]
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        url = processes.server()
        runs = [
            (fuse, cadence, run_study(processes, url, args, fuse, i, cadence))
            for i, (fuse, cadence) in enumerate(plan)
        ]
    print(machine("torch").line())
    print(
        f"\n{args.configs} configurations x {args.epochs} epochs, {args.model} on {args.dataset}, "
        f"norm {args.norm}, batch {args.batch_size}, {args.workers} workers on {args.device}\n"
    )
    print(
        "| --fuse | checkpoint_seconds | completed | wall (s) | configurations/hour "
        "| first start to last end (s) "
        "| configurations/hour without start-up | workers' CPU (s) | server's CPU (s) "
        "| accuracy min / q1 / median / q3 / max | median abs. diff. to first |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    first = runs[0][2]["values"]
    for fuse, cadence, run in runs:
        values = run["values"]
        spread = " / ".join(
            f"{quantile(list(values.values()), q):.3f}" for q in (0, 0.25, 0.5, 0.75, 1)
        )
        diffs = [abs(values[n] - first[n]) for n in values if n in first]
        print(
            f"| {fuse} | {'default' if cadence is None else f'{cadence:g}'} | {len(values)} | "
            f"{run['seconds']:.1f} | "
            f"{3600 * len(values) / run['seconds']:,.0f} | {run['training']:.1f} | "
            f"{3600 * len(values) / run['training']:,.0f} | {run['cpu']:.1f} | "
            f"{_blank_nan(run['server_cpu'])} | {spread} | "
            f"{statistics.median(diffs) if diffs else float('nan'):.4f} |",
            flush=True,
        )


def _blank_nan(value: float) -> str:
    return "" if value != value else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8,16,32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--service", action="store_true", help="the whole-service figure")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--norm", default="batch")
    parser.add_argument("--batch-sizes", default="", help="--service: batch sizes to draw from")
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fuse", default="8,1")
    parser.add_argument(
        "--checkpoint-seconds",
        default="default",
        help="--service: comma-separated workload values, each --fuse run with each in turn; "
        "`default`: not set (the tunable's default)",
    )
    args = parser.parse_args()
    if args.service:
        service(args)
        return
    torch.set_num_threads(args.threads)
    print(machine("torch").line())
    print(f"\n{args.device}, {args.threads} thread(s), batch {args.batch_size}\n")
    print(
        "| model | dataset | norm | K | fused samples/s | separate samples/s | ratio "
        "| ratio in CPU time | busy |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in args.cases.split(","):
        for k in (int(v) for v in args.ks.split(",")):
            row = measure(args, case, k)
            load = "" if row["busy"] is None else f"{row['busy']:.0%}"
            model, dataset, norm = case.split(":")
            print(
                f"| {model} | {dataset} | {norm} | {k} | {row['fused']:,.0f} | "
                f"{row['alone']:,.0f} | {row['ratio']:.2f} | {row['cpu_ratio']:.2f} | {load} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
