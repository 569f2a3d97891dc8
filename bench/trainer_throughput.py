"""Training throughput of the built-in loop (`trainer.train`'s epoch) against a minimal hand-written
PyTorch loop on the same model, data, batch size and device, in one process.

    python bench/trainer_throughput.py [--dataset mnist1d] [--epochs 8] [--rounds 2]
                                       [--batch-size 64] [--device cpu] [--threads N]

Prints a markdown table of training samples per second (medians over epochs) and the ratio
built-in / hand-written (median of per-epoch ratios). The loops take turns epoch by epoch, so
other work on a shared machine slows them alike. The hand-written loop is what a user would
write: a fresh permutation per epoch, index-gathered batches, and
`torch.optim.AdamW(model.parameters())` (weight decay 0.01 on every parameter; the built-in loop
gets weight_decay 0.01 too, on weights only). A second column gives it the fused AdamW that the
built-in loop uses, so the ratio against that one is the built-in loop's own overhead: its lr
schedule, two param groups, loss bookkeeping. Validation is outside the measured time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import torch
import torch.nn.functional as F
from reporting import machine  # bench/reporting.py

from hpo.protocol import Decision
from trainer.data import load_dataset
from trainer.models import build_model
from trainer.params import Params
from trainer.reporting import Reporter
from trainer.train import TrainConfig, build_run, train_epoch

CASES = [("mlp", "batch"), ("mlp", "layer"), ("cnn", "batch"), ("cnn", "layer")]
LR = 1e-3


class HandWritten:
    """A minimal training loop on the trainer's cached data, one epoch per call."""

    def __init__(self, args: argparse.Namespace, model: str, norm: str, fused: bool) -> None:
        params = Params({"norm": norm})
        self.data = load_dataset(args.dataset, params, args.device)
        torch.manual_seed(0)
        shape, classes = self.data.sample_shape, self.data.n_classes
        self.model = build_model(model, shape, classes, params).to(args.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, fused=fused or None)
        self.batch_size = args.batch_size

    def epoch(self) -> float:
        """Trains one epoch; returns its training samples per second."""
        x, y, n = self.data.x_train, self.data.y_train, len(self.data.y_train)
        self.model.train()
        started = time.perf_counter()
        order = torch.randperm(n, device=x.device)
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            loss = F.cross_entropy(self.model(x[batch]), y[batch])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        loss.item()  # wait for the device before reading the clock
        return n / (time.perf_counter() - started)


def measure(args: argparse.Namespace, model: str, norm: str) -> dict[str, list[float]]:
    """Per-epoch samples/s of the built-in loop and of both hand-written loops, epoch for epoch:
    after each built-in epoch each hand-written loop trains one epoch, so a machine busy with
    other work slows all three alike. The first epoch of each round is left out.

    The built-in side is the loop's own epoch (`build_run`, then `train_epoch` with an idle
    reporter, as `train` runs it): inside `train` the report callback runs on a helper thread
    while the next epoch trains, so hand-written epochs run from the callback would compete
    with the built-in one instead of taking turns."""
    plain = HandWritten(args, model, norm, fused=False)
    fused = HandWritten(args, model, norm, fused=True)
    rates: dict[str, list[float]] = {"builtin": [], "plain": [], "fused": []}
    # weight_decay 0.01 is torch's AdamW default, which the hand-written loops use on everything.
    params = {
        "norm": norm,
        "batch_size": args.batch_size,
        "lr": LR,
        "optimizer": "adamw",
        "weight_decay": 0.01,
    }
    n_train = len(plain.data.y_train)
    for _ in range(args.rounds):
        config = TrainConfig(model, args.dataset, args.epochs, params, 0, args.device)
        run, reporter = build_run(config), Reporter(lambda epoch, metrics: Decision.CONTINUE, None)
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            train_epoch(run, epoch, reporter)  # its loss .item() waits for the device
            builtin_rate = n_train / (time.perf_counter() - started)
            plain_rate, fused_rate = plain.epoch(), fused.epoch()
            if epoch > 1:
                rates["builtin"].append(builtin_rate)
                rates["plain"].append(plain_rate)
                rates["fused"].append(fused_rate)
        reporter.close()
    return rates


def ratio(rates: dict[str, list[float]], baseline: str) -> float:
    """Median over epochs of built-in / baseline samples per second of the same moment."""
    return statistics.median(b / o for b, o in zip(rates["builtin"], rates[baseline], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    described = machine("torch").line()
    print(f"{args.dataset}, batch size {args.batch_size}, device {args.device}: {described}\n")
    print(
        "| model | norm | built-in samples/s | hand-written | ratio | hand-written, fused AdamW "
        "| ratio |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model, norm in CASES:
        rates = measure(args, model, norm)
        builtin, plain, fused = (statistics.median(rates[k]) for k in ("builtin", "plain", "fused"))
        print(
            f"| {model} | {norm} | {builtin:,.0f} | {plain:,.0f} | {ratio(rates, 'plain'):.2f} "
            f"| {fused:,.0f} | {ratio(rates, 'fused'):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
