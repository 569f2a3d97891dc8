"""A completed trial's model as one self-contained file, and the module rebuilt from it.

The file is `torch.save`'s format holding only tensors, dicts, lists, strings and numbers, so
`torch.load(path, weights_only=True)` reads it and loading can never run code:

- `format` ("hpo-model") and `version` (1): what this is;
- `model`: the builder's name (`mlp`, `cnn`, `resnet`, or a plugin's `hpo.models` entry) and
  `package`: the distribution that provides it (`hpo-service` for the built-ins);
- `params`: the trial's params as the builder reads them (depth, width, norm, dropout, ...),
  `input_shape` (one sample, channel-first) and `n_classes`;
- `standardize`: `{"mean", "std"}` tensors of the training split, which the trainer subtracted
  and divided by (None when the workload turned standardization off);
- `state_dict`: the weights (batch-norm running statistics included);
- `trial`: who it is: study name and id, trial id and number, the last epoch's metrics.

`load` (the `hpo.model_loaders` entry point that `hpo.load_model` calls) rebuilds the module
with the same builder the worker trained with, loads the weights and wraps the standardization,
so the loaded model takes raw inputs and is in eval mode.
"""

from __future__ import annotations

import io
import pickle
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hpo.model import ModelFileError
from trainer import plugins
from trainer.models import MODELS, build_model
from trainer.params import Params

if TYPE_CHECKING:
    from hpo.protocol import Assignment
    from trainer.train import Run

FORMAT = "hpo-model"
VERSION = 1
BUILTIN_PACKAGE = "hpo-service"


class Standardized(nn.Module):
    """(x - mean) / std, then the trained model: the input standardization the trainer applied
    to every split, so the module takes raw samples."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def package_of(model: str) -> str:
    """The distribution that provides builder `model`: hpo-service for the built-ins, else
    the plugin's (its `hpo.models` entry point's distribution), `unknown` when not found."""
    if model in MODELS:
        return BUILTIN_PACKAGE
    for entry in entry_points(group=plugins.GROUPS["models"], name=model):
        if entry.dist is not None:
            return str(entry.dist.name)
    return "unknown"


def dump(run: Run, model: str, params: dict[str, Any], trial: dict[str, Any]) -> bytes:
    """The file of `run`'s trained model (built by builder `model` from `params`), with
    `trial` (study, trial id, number, metrics) for whoever loads it."""
    data = run.data
    standardize = None
    if data.mean is not None and data.std is not None:
        standardize = {"mean": data.mean.cpu().clone(), "std": data.std.cpu().clone()}
    state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    content = {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "package": package_of(model),
        "params": dict(params),
        "input_shape": list(data.sample_shape),
        "n_classes": int(data.n_classes),
        "standardize": standardize,
        "state_dict": state,
        "trial": trial,
        "torch": str(torch.__version__),
    }
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def read(source: str | Path | bytes) -> dict[str, Any]:
    """The file's content, read with `weights_only=True`.

    Raises ModelFileError when it is not a model file of a version this trainer reads."""
    stream: Any = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        content = torch.load(stream, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        raise ModelFileError(f"not a model file of hpo: {exc}") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ModelFileError("not a model file of hpo (no 'format': 'hpo-model')")
    if content.get("version") != VERSION:
        raise ModelFileError(
            f"model file version {content.get('version')!r}; this trainer reads {VERSION}"
        )
    return content


def load(source: str | Path | bytes) -> nn.Module:
    """The trained module of a model file (a path or its bytes), in eval mode, taking raw
    inputs (the training split's standardization is part of it).

    Raises ModelFileError for a file that is not one, or whose builder is not installed here
    (the message names the model and the package that provides it)."""
    content = read(source)
    name = content["model"]
    if name not in MODELS and name not in plugins.discover().models:
        raise ModelFileError(
            f"model {name!r} of this file is not installed here: install the package "
            f"{content.get('package', 'unknown')!r}, which provides it as an 'hpo.models' "
            "entry point"
        )
    params = Params(content["params"])
    module = build_model(name, tuple(content["input_shape"]), content["n_classes"], params)
    module.load_state_dict(content["state_dict"])
    standardize = content.get("standardize")
    if standardize is not None:
        module = Standardized(module, standardize["mean"], standardize["std"])
    module.hpo_trial = content.get("trial", {})  # type: ignore[assignment]
    return module.eval()


def for_assignment(assignment: Assignment, run: Run, metrics: dict[str, float]) -> bytes:
    """The model file of a leased trial that trained its full budget in `run`, with its last
    epoch's `metrics`."""
    from trainer.train import TrainConfig

    config = TrainConfig.from_assignment(
        assignment.workload, assignment.params, assignment.epochs, "cpu"
    )
    trial = {
        "study": assignment.study_name,
        "study_id": assignment.study_id,
        "trial_id": assignment.trial_id,
        "number": assignment.number,
        "seed": config.seed,
        "dataset": config.dataset,
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    return dump(run, config.model, config.params, trial)
