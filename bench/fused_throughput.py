"""Training throughput of fused groups (trainer.fused) against the same trials trained one by
one with the unfused loop (trainer.train), on the same data, batch size and device.

    python bench/fused_throughput.py [--ks 1,2,4,8,16,32] [--epochs 2] [--device cpu]
                                     [--threads 1] [--cases mlp:digits:batch,...]

For each case (model, dataset, norm) and group size K, a group of K trials (each its own seed,
lr, dropout and weight decay, as a random search draws them) trains `--epochs` epochs; its
figure is training samples per second over all K trials (K x training samples / epoch time).
K separate trainings take K times one trial's epoch time, so their samples per second are one
unfused trial's; the unfused epochs run between the fused ones, so other work on a shared
machine slows both alike. Figures are medians over epochs after the first (which pays one-time
costs); the ratio is fused / separate. Validation and reports are outside the measured time.
On CUDA the figure also gives the device's busy fraction (torch.cuda.utilization, when the
driver tells it). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import torch
from reporting import machine  # bench/reporting.py

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
    for epoch in range(1, args.epochs + 1):
        for member in group.members:
            member.done = epoch - 1
        _, _, seconds = _train_epoch(group)
        loads.append(busy())
        fused.append(k * n_train / seconds)
        if single.data.x_train.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        train_epoch(single, epoch)
        alone.append(n_train / (time.perf_counter() - started))
    fused_rate = statistics.median(fused[1:] or fused)
    alone_rate = statistics.median(alone[1:] or alone)
    known = [load for load in loads[1:] if load is not None]
    return {
        "fused": fused_rate,
        "alone": alone_rate,
        "ratio": fused_rate / alone_rate,
        "busy": statistics.median(known) if known else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8,16,32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine("torch").line())
    print(f"\n{args.device}, {args.threads} thread(s), batch {args.batch_size}\n")
    print("| model | dataset | norm | K | fused samples/s | separate samples/s | ratio | busy |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for case in args.cases.split(","):
        for k in (int(v) for v in args.ks.split(",")):
            row = measure(args, case, k)
            load = "" if row["busy"] is None else f"{row['busy']:.0%}"
            model, dataset, norm = case.split(":")
            print(
                f"| {model} | {dataset} | {norm} | {k} | {row['fused']:,.0f} | "
                f"{row['alone']:,.0f} | {row['ratio']:.2f} | {load} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
