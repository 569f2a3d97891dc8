"""`hpo.load_model`: a trial's kept model file back as a PyTorch module.

The file (`GET /api/v1/trials/{id}/model`, `Trial.model()`, `Study.best_model()`) is read with
`torch.load(weights_only=True)`, so loading it never runs code from the file. This package
imports no torch: the loading is done by whatever is installed under the `hpo.model_loaders`
entry point group, which the trainer (the same `hpo-service` distribution) fills with
`trainer.model_file:load`. That loader rebuilds the module with the builder the worker trained
it with: a built-in (`mlp`, `cnn`, `resnet`) or a plugin's `hpo.models` entry point, so a
plugin model loads wherever its package is installed (docs/plugins.md).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

LOADERS = "hpo.model_loaders"
LOADER = "torch"


class ModelFileError(ValueError):
    """The file is not a model file of hpo, has a version this installation cannot read, or
    names a model whose builder is not installed (the message names the package to install)."""


def load_model(source: str | os.PathLike[str] | bytes) -> Any:
    """The trained `torch.nn.Module` of a model file (a path or its bytes), in eval mode. It
    takes raw inputs: the standardization the trainer applied (the training split's mean and
    std) is its first step. `module.hpo_trial` says whose it is: study, trial id and number,
    its dataset and seed, and its last epoch's metrics.

    Raises ModelFileError for a file that is not one or whose model is not installed, and
    ImportError when PyTorch or the trainer is missing."""
    found = [e for e in entry_points(group=LOADERS) if e.name == LOADER]
    if not found:
        raise ImportError(
            "loading a model needs the trainer of hpo-service (the 'hpo.model_loaders' entry "
            "point): pip install hpo-service"
        )
    try:
        load = found[0].load()
    except ImportError as exc:
        raise ImportError(f"loading a model needs PyTorch: pip install torch ({exc})") from exc
    return load(source if isinstance(source, bytes) else os.fspath(source))
