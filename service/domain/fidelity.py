"""Rungs and brackets of successive halving and Hyperband (pure arithmetic, no I/O).

Successive halving (the synchronous algorithm): `n` configurations each train `min_epochs`;
when a rung is complete the best 1/eta go on to eta times the epochs, the rest are pruned; the
last rung trains to the full budget. Promoted trials continue from their checkpoints, so a
configuration that reaches the last rung has trained exactly `epochs` epochs in all.

Hyperband runs several such brackets, trading many short trials against few long ones
(Li et al., 2018): for s = s_max .. 0, n = ceil((s_max + 1) / (s + 1) * eta^s) configurations
start at about R / eta^s epochs. Trials are numbered bracket after bracket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    configs: int  # how many configurations train in this rung
    epochs: int  # epochs a configuration has trained in all when it completes the rung


@dataclass(frozen=True)
class Bracket:
    index: int  # Hyperband's s (0 for successive halving)
    rungs: tuple[Rung, ...]

    @property
    def size(self) -> int:
        """Trials the bracket creates: the configurations of its first rung."""
        return self.rungs[0].configs

    def total_epochs(self) -> int:
        """Epochs the bracket trains when every promoted trial resumes from its checkpoint."""
        done, total = 0, 0
        for rung in self.rungs:
            total += rung.configs * (rung.epochs - done)
            done = rung.epochs
        return total


def rung_count(min_epochs: int, epochs: int, eta: int) -> int:
    """Rungs from min_epochs to epochs growing by eta: the largest k with min*eta^(k-1) < epochs,
    plus the final rung at `epochs`."""
    count, reach = 1, min_epochs
    while reach < epochs:
        reach *= eta
        count += 1
    return count


def default_n_configs(min_epochs: int, epochs: int, eta: int) -> int:
    """Enough configurations that one survives to the last rung: eta^(rungs - 1)."""
    return int(eta ** (rung_count(min_epochs, epochs, eta) - 1))


def successive_halving(
    n_configs: int, min_epochs: int, epochs: int, eta: int, index: int = 0
) -> Bracket:
    rungs, i = [], 0
    while True:
        reach = min(min_epochs * eta**i, epochs)
        rungs.append(Rung(configs=max(1, n_configs // eta**i), epochs=reach))
        if reach >= epochs:
            return Bracket(index=index, rungs=tuple(rungs))
        i += 1


def hyperband(min_epochs: int, epochs: int, eta: int) -> list[Bracket]:
    """The standard brackets for maximum `epochs` and minimum `min_epochs`, s_max first."""
    s_max = 0
    while min_epochs * eta ** (s_max + 1) <= epochs:
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-((s_max + 1) * eta**s) // (s + 1))  # ceil without floats
        rungs = tuple(
            Rung(
                configs=max(1, n // eta**i),
                epochs=epochs if i == s else max(min_epochs, _half_up(epochs / eta ** (s - i))),
            )
            for i in range(s + 1)
        )
        brackets.append(Bracket(index=s, rungs=rungs))
    return brackets


def _half_up(x: float) -> int:
    """Round halves up (20 / 8 = 2.5 epochs is 3), not to even as `round` does."""
    return int(x + 0.5)


def schedule(
    kind: str, n_configs: int | None, min_epochs: int, epochs: int, eta: int
) -> list[Bracket]:
    """The brackets a multi-fidelity study runs, in the order its trials are numbered."""
    if kind == "hyperband":
        return hyperband(min_epochs, epochs, eta)
    n = n_configs or default_n_configs(min_epochs, epochs, eta)
    return [successive_halving(n, min_epochs, epochs, eta)]


def locate(brackets: list[Bracket], number: int) -> int:
    """Position in `brackets` of the bracket that trial `number` belongs to."""
    start = 0
    for position, bracket in enumerate(brackets):
        if number < start + bracket.size:
            return position
        start += bracket.size
    raise ValueError(f"trial {number} is beyond the schedule's {start} trials")
