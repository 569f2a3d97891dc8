"""Search efficiency: grid, random, tpe, successive_halving and hyperband (with random, tpe and
bohb proposals) on MNIST-1D with the CNN, compared by the best validation accuracy they reach
against the epochs they train.

    python bench/hpo_efficiency.py [--seeds 10] [--rebuild] [--out DIR] [--only TEXT]

A tabular benchmark (as HPOBench and NAS-Bench do it). Step 1 trains every configuration of a
finite grid over lr, batch_size, dropout, weight_decay and norm once for the full budget with the
real trainer (`trainer.train.train`, one torch thread, seed 0) and stores each one's per-epoch
validation accuracy in `bench/results/hpo_efficiency_table.json`; later runs reuse it (`--rebuild`
trains again). The trainer is deterministic on CPU, so a stored curve is what that configuration
produces whenever it is trained.

Step 2 runs every strategy through the service's real domain layer, in process, on a fresh
SQLite database: the study is created from a spec whose space is exactly the grid, and a worker
leases trials, "trains" epochs start_epoch+1 .. target_epochs by reading the table, saves a
checkpoint and reports each epoch, and stops when the answer is not `continue` (successive
halving pauses trials at rung ends and resumes the promoted ones from their checkpoints). Every
epoch played counts as trained: it is the compute a real run would spend.

A strategy's result is the study's best trial (the best completed trial's val_accuracy at its
last epoch, what `GET /api/v1/studies/{id}` shows as `best`); the anytime curve is that value
after each completed trial against the epochs trained so far. Prints a markdown table and writes
`hpo_efficiency_runs.json` and the plot `hpo_efficiency.png` next to the table. Step 1 lives in
bench/efficiency_table.py.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import torch
from efficiency_table import (  # bench/efficiency_table.py: step 1, the table
    EPOCHS,
    GRID,
    WORKLOAD,
    build_table,
    config_key,
    final_accuracy,
    save_json,
)

from hpo.protocol import Decision, StudyState
from service.app import build_services
from service.settings import Settings

RESULTS = Path(__file__).parent / "results"


# -- step 2: strategies through the service ---------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One row of the result table: a strategy with its settings."""

    label: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    max_trials: int | None = None
    plotted: bool = True


def sh_variant(n_configs: int, min_epochs: int, eta: int, plotted: bool = True) -> Variant:
    options = {"n_configs": n_configs, "min_epochs": min_epochs, "reduction_factor": eta}
    label = f"successive_halving (n {n_configs}, min {min_epochs}, eta {eta})"
    return Variant(label, "successive_halving", options, plotted=plotted)


TPE_ETA_2 = {"sampler": "tpe", "reduction_factor": 2}
BOHB_ETA_2 = {"sampler": "bohb", "reduction_factor": 2}
BOHB_REPEATS = {"sampler": "bohb", "allow_repeats": True}

# A fifth of grid's 1,920 epochs is 384: random and tpe get 19 trials (380 epochs) there, and
# 4 (80) and 8 (160) trials to match successive halving's and Hyperband's default budgets.
VARIANTS = [
    Variant("grid", "grid"),
    Variant("grid, 19 points", "grid", max_trials=19, plotted=False),
    Variant("random, 4 trials", "random", max_trials=4, plotted=False),
    Variant("random, 8 trials", "random", max_trials=8, plotted=False),
    Variant("random, 19 trials", "random", max_trials=19),
    Variant("tpe, 4 trials", "tpe", max_trials=4, plotted=False),
    Variant("tpe, 8 trials", "tpe", max_trials=8, plotted=False),
    Variant("tpe, 19 trials", "tpe", max_trials=19),
    Variant("successive_halving (defaults: n 27, min 1, eta 3)", "successive_halving"),
    sh_variant(27, 2, 3, plotted=False),
    sh_variant(81, 1, 3, plotted=False),
    sh_variant(64, 2, 2, plotted=False),
    sh_variant(81, 2, 3),
    Variant("hyperband (defaults: min 1, eta 3)", "hyperband"),
    Variant("hyperband (min 1, eta 2)", "hyperband", {"reduction_factor": 2}),
    # The model-based variants at the same brackets, hence the same epochs, as the two above.
    Variant("hyperband + tpe (min 1, eta 3)", "hyperband", {"sampler": "tpe"}, plotted=False),
    Variant("hyperband + tpe (min 1, eta 2)", "hyperband", TPE_ETA_2, plotted=False),
    Variant("hyperband + bohb (min 1, eta 3)", "hyperband", {"sampler": "bohb"}),
    Variant("hyperband + bohb (min 1, eta 2)", "hyperband", BOHB_ETA_2),
    # The paper's sampler, which may propose a configuration again from its model.
    Variant("hyperband + bohb, allow_repeats (eta 3)", "hyperband", BOHB_REPEATS, plotted=False),
    Variant(
        "hyperband + bohb, allow_repeats (eta 2)",
        "hyperband",
        {**BOHB_REPEATS, "reduction_factor": 2},
        plotted=False,
    ),
]


def study_spec(variant: Variant, seed: int) -> dict[str, Any]:
    """The study of one variant and seed; its space is exactly the table's grid."""
    budget: dict[str, Any] = {"epochs": EPOCHS, "parallel_trials": 1}
    if variant.max_trials is not None:
        budget["max_trials"] = variant.max_trials
    return {
        "name": f"bench-{variant.kind}-{seed}",
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": variant.kind, "seed": seed, **variant.options},
        "budget": budget,
        "space": {
            name: {"type": "categorical", "choices": values} for name, values in GRID.items()
        },
        "workload": WORKLOAD,
    }


@dataclass
class Tally:
    """What one study spent and found: epochs and (table) training seconds played, and the
    best completed trial after each completion that improved it (the anytime curve)."""

    epochs: int = 0
    seconds: float = 0.0
    best: float | None = None
    anytime: list[tuple[int, float]] = field(default_factory=list)
    trained: dict[int, int] = field(default_factory=dict)  # trial id -> epochs played
    configs: set[tuple[int, ...]] = field(default_factory=set)  # distinct ones trained
    anomalies: list[str] = field(default_factory=list)

    def spend(self, trial_id: int, entry: dict[str, Any], epoch: int) -> None:
        self.epochs += 1
        seconds = entry["epoch_seconds"]
        self.seconds += seconds[epoch - 1] if epoch <= len(seconds) else 0.0
        self.trained[trial_id] = epoch

    def completed(self, value: float) -> None:
        if self.best is None or value > self.best:
            self.best = value
            self.anytime.append((self.epochs, value))


class Replay:
    """A worker that trains by reading the table: leases trials from the service, plays their
    epochs (checkpoint, then report), and stops, completes or fails them as a real worker
    would (trainer/worker.py)."""

    def __init__(self, services: Any, table: dict[str, Any]) -> None:
        self.protocol = services.protocol
        self.worker = self.protocol.leasing.register(
            "bench", "localhost", os.getpid(), "cpu", {}
        ).id
        self.entries = {config_key(e["params"]): e for e in table["configs"]}
        self.tally = Tally()

    def drive(self) -> Tally:
        """Leases and plays trials until the service hands out no more."""
        while assignments := self.protocol.leasing.lease(self.worker):
            for assignment in assignments:
                self.play(assignment)
        return self.tally

    def play(self, assignment: Any) -> None:
        trial, tally = assignment.trial, self.tally
        key = config_key(trial.params)
        entry = self.entries[key]
        tally.configs.add(key)
        already = tally.trained.get(trial.id, 0)
        if assignment.start_epoch != already:
            tally.anomalies.append(
                f"trial {trial.number} resumed after epoch {assignment.start_epoch}, "
                f"but it had trained {already}"
            )
        for epoch in range(assignment.start_epoch + 1, assignment.target_epochs + 1):
            tally.spend(trial.id, entry, epoch)
            if not self.epoch(trial, entry, epoch):
                return
        done = self.protocol.reporting.complete(trial.id, trial.lease_token)
        if done.state == "completed" and done.value is not None:
            tally.completed(done.value)

    def epoch(self, trial: Any, entry: dict[str, Any], epoch: int) -> bool:
        """Plays one epoch; whether the trial goes on."""
        token, curve = trial.lease_token, entry["val_accuracy"]
        if epoch > len(curve):  # the configuration's loss became NaN in this epoch
            self.protocol.reporting.fail(trial.id, token, entry["error"] or "failed")
            return False
        self.protocol.reporting.save_checkpoint(trial.id, token, epoch, [b"checkpoint"])
        metrics = {"val_accuracy": curve[epoch - 1]}
        decision = self.protocol.reporting.report(trial.id, token, epoch, metrics)
        return Decision(decision) is Decision.CONTINUE


@dataclass
class Run:
    """One study of one variant and seed."""

    seed: int
    epochs: int
    seconds: float
    best: float | None
    service_best: float | None
    expected_epochs: int | None
    trials: int
    distinct: int  # distinct configurations among the trials
    state: str
    anytime: list[tuple[int, float]]
    anomalies: list[str]


def run_study(table: dict[str, Any], variant: Variant, seed: int) -> Run:
    """Runs one study to its end on a fresh database and returns what it spent and found.

    Raises RuntimeError when the service stops handing out trials before the study ends."""
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", artifacts_dir=Path(tmp))
        services = build_services(settings)
        try:
            document = study_spec(variant, seed)
            spec = services.studies.validate(document)
            study_id = services.studies.create(document).row.id
            tally = Replay(services, table).drive()
            view = services.studies.get(study_id)
        finally:
            services.db.dispose()
    if view.row.state != StudyState.COMPLETED.value:
        raise RuntimeError(f"{variant.label}, seed {seed}: the study stalled: {view.counts}")
    multi = spec.strategy.is_multi_fidelity
    return Run(
        seed=seed,
        epochs=tally.epochs,
        seconds=tally.seconds,
        best=tally.best,
        service_best=view.best.value if view.best is not None else None,
        expected_epochs=sum(b.total_epochs() for b in spec.brackets()) if multi else None,
        trials=sum(view.counts.values()),
        distinct=len(tally.configs),
        state=view.row.state,
        anytime=tally.anytime,
        anomalies=tally.anomalies,
    )


# -- step 3: summary, table and plot ----------------------------------------------------------


def grid_best(table: dict[str, Any]) -> float:
    """The best full-budget val_accuracy in the table: what a complete grid search finds."""
    return max(a for e in table["configs"] if (a := final_accuracy(e)) is not None)


def summarize(variant: Variant, runs: list[Run], best: float, grid_epochs: int) -> dict[str, Any]:
    """One row of the result table; a run that completed no trial counts as accuracy 0."""
    values = [r.best or 0.0 for r in runs]
    mean = statistics.fmean(values)
    epochs = statistics.fmean(r.epochs for r in runs)
    return {
        "label": variant.label,
        "epochs": epochs,
        "fraction": epochs / grid_epochs,
        "minutes": statistics.fmean(r.seconds for r in runs) / 60,
        "best": mean,
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "gap_pp": (best - mean) * 100,
        "within": sum((best - v) * 100 <= 0.5 + 1e-9 for v in values),
        "seeds": len(runs),
        "trials": statistics.fmean(r.trials for r in runs),
        "distinct": statistics.fmean(r.distinct for r in runs),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | trials (distinct) | epochs | of grid's | train time, min"
        " | best val acc, % (mean ± std) | gap to grid best, pp | seeds within 0.5 pp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['trials']:.0f} ({r['distinct']:.1f}) | {r['epochs']:,.0f}"
            f" | {r['fraction']:.3f} | {r['minutes']:.1f}"
            f" | {r['best'] * 100:.2f} ± {r['std'] * 100:.2f} | {r['gap_pp']:.2f}"
            f" | {r['within']}/{r['seeds']} |"
        )
    return "\n".join(lines)


def mean_anytime(runs: list[Run]) -> tuple[list[int], list[float]]:
    """Mean over seeds of the best completed trial after each epoch count up to the runs'
    (mean) total, from the first count at which every seed has completed a trial."""
    last = round(statistics.fmean(r.epochs for r in runs))
    xs, means = [], []
    for x in range(1, last + 1):
        at = [max((v for e, v in r.anytime if e <= x), default=math.nan) for r in runs]
        if not any(math.isnan(v) for v in at):
            xs.append(x)
            means.append(statistics.fmean(at) * 100)
    return xs, means


def draw_variant(ax: Any, variant: Variant, runs: list[Run]) -> None:
    """The variant's mean anytime curve, ending in a marker with the seeds' std as error bar."""
    xs, means = mean_anytime(runs)
    (line,) = ax.step(xs, means, where="post", label=variant.label)
    values = [(r.best or 0.0) * 100 for r in runs]
    ax.errorbar(
        statistics.fmean(r.epochs for r in runs),
        statistics.fmean(values),
        yerr=statistics.stdev(values) if len(values) > 1 else 0.0,
        fmt="o",
        color=line.get_color(),
        capsize=3,
    )


def plot(results: dict[str, list[Run]], best: float, grid_epochs: int, path: Path) -> None:
    """Best completed trial (mean over seeds) against epochs trained, log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for variant in VARIANTS:
        if variant.plotted:
            draw_variant(ax, variant, results[variant.label])
    ax.axhline(best * 100, color="black", linewidth=0.8, linestyle="--", label="grid best")
    ax.axhspan(best * 100 - 0.5, best * 100, color="grey", alpha=0.2, label="within 0.5 pp")
    ax.axvline(grid_epochs / 5, color="grey", linestyle=":", label="a fifth of grid's epochs")
    ax.set(xscale="log", ylim=(best * 100 - 5, best * 100 + 0.5))
    ax.set_xlabel("epochs trained (cumulative)")
    ax.set_ylabel("best completed trial: val accuracy % (mean over seeds)")
    ax.set_title(f"MNIST-1D CNN, {grid_epochs // EPOCHS}-point grid, {EPOCHS} epochs a trial")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check(variant: Variant, run: Run) -> list[str]:
    """What a run shows that the service should not do: a total that differs from the
    algorithm's budget, retrained epochs, a best trial other than the one seen completing."""
    problems = [f"{variant.label}, seed {run.seed}: {a}" for a in run.anomalies]
    if run.expected_epochs is not None and run.epochs != run.expected_epochs:
        problems.append(
            f"{variant.label}, seed {run.seed}: trained {run.epochs} epochs, "
            f"the brackets' budget is {run.expected_epochs}"
        )
    if run.best != run.service_best:
        problems.append(
            f"{variant.label}, seed {run.seed}: best completed value {run.best}, "
            f"the service reports {run.service_best}"
        )
    return problems


def run_all(table: dict[str, Any], seeds: int, variants: list[Variant]) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {}
    for variant in variants:
        started = time.perf_counter()
        results[variant.label] = [run_study(table, variant, seed) for seed in range(seeds)]
        seconds = time.perf_counter() - started
        print(f"{variant.label}: {seeds} seeds in {seconds:.0f} s", flush=True)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="strategy seeds 0..N-1")
    parser.add_argument("--rebuild", action="store_true", help="train the table again")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    parser.add_argument(
        "--only",
        metavar="TEXT",
        help="run only the strategies whose label contains TEXT and print their table "
        "(more seeds for a few rows); the result files are left as they are",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # Tiny models on a shared CPU: one thread per process is fastest (docs/BENCHMARKS.md).
    torch.set_num_threads(1)
    table = build_table(args.out / "hpo_efficiency_table.json", args.rebuild)
    best = grid_best(table)
    grid_epochs = len(table["configs"]) * EPOCHS
    if args.only:
        chosen = [v for v in VARIANTS if args.only in v.label]
        results = run_all(table, args.seeds, chosen)
        print(markdown([summarize(v, results[v.label], best, grid_epochs) for v in chosen]))
        for problem in (p for v in chosen for r in results[v.label] for p in check(v, r)):
            print("PROBLEM:", problem)
        return
    results = run_all(table, args.seeds, VARIANTS)
    problems = [p for v in VARIANTS for r in results[v.label] for p in check(v, r)]
    rows = [summarize(v, results[v.label], best, grid_epochs) for v in VARIANTS]
    save_json(
        args.out / "hpo_efficiency_runs.json",
        {
            "grid_best": best,
            "rows": rows,
            "runs": {k: [asdict(r) for r in v] for k, v in results.items()},
            "problems": problems,
        },
    )
    plot(results, best, grid_epochs, args.out / "hpo_efficiency.png")
    build_minutes = table["meta"]["build_seconds"] / 60
    print(
        f"\ngrid best {best * 100:.2f}% over {len(table['configs'])} configurations; "
        f"table built in {build_minutes:.1f} min of training\n"
    )
    print(markdown(rows))
    for problem in problems:
        print("PROBLEM:", problem)


if __name__ == "__main__":
    main()
