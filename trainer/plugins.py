"""Plugins: a user's own models, datasets and whole training functions, installed on a worker
as Python entry points and named in a study's workload like the built-in ones.

Entry point groups and what each entry must be:

- `hpo.models`: `build(input_shape: tuple[int, ...], n_classes: int, options: dict)` returning a
  `torch.nn.Module` that maps a batch of inputs to class logits.
- `hpo.datasets`: `load(options: dict)` returning a mapping of numpy arrays `x_train`, `y_train`
  and optionally `x_val`, `y_val`, `x_test`, `y_test` (split and standardized like an npz file).
- `hpo.trainers`: `train(config, report, checkpoint)` with the signature and contract of
  `trainer.train.train`; named as the workload's `model`.

`options` holds the trial's params (sampled and fixed workload keys). A worker announces the
names it found when it registers; the server accepts a study naming them, and hands its trials
only to workers that have them. A plugin that fails to import is logged and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from hpo import tunables

log = logging.getLogger("hpo.plugins")

GROUPS = {"models": "hpo.models", "datasets": "hpo.datasets", "trainers": "hpo.trainers"}


@dataclass(frozen=True)
class Plugins:
    models: dict[str, Callable[..., Any]] = field(default_factory=dict)
    datasets: dict[str, Callable[..., Any]] = field(default_factory=dict)
    trainers: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def capabilities(self) -> dict[str, Any]:
        """What the worker tells the server it can run (trainers are named as models), and
        the tunables its models and trainers declare (`tunables` only when some do)."""
        caps: dict[str, Any] = {
            "models": sorted({*self.models, *self.trainers}),
            "datasets": sorted(self.datasets),
        }
        declared = [
            tunable.model_dump(mode="json")
            for name, entry in sorted({**self.models, **self.trainers}.items())
            for tunable in declared_tunables(name, entry)
        ]
        if declared:
            caps["tunables"] = declared
        return caps


def declared_tunables(name: str, entry: Callable[..., Any]) -> list[tunables.Tunable]:
    """The tunables a plugin model or trainer declares as its entry point's `tunables`
    attribute (hpo.tunables.Tunable objects or their dicts), each scoped to `name`. A broken
    declaration is logged and left out, like a plugin that fails to load."""
    try:
        return [
            tunables.Tunable.model_validate(t).model_copy(update={"models": (name,)})
            for t in getattr(entry, "tunables", None) or []
        ]
    except ValueError as exc:
        log.error("plugin %s declares unusable tunables: %s", name, exc)
        return []


def _load_group(group: str) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for entry in entry_points(group=group):
        try:
            found[entry.name] = entry.load()
        except Exception as exc:  # a broken plugin must not keep the worker from starting
            log.error("plugin %s = %s (%s) failed to load: %s", entry.name, entry.value, group, exc)
    return found


@lru_cache(maxsize=1)
def discover() -> Plugins:
    """The installed plugins, loaded once per process."""
    return Plugins(**{kind: _load_group(group) for kind, group in GROUPS.items()})
