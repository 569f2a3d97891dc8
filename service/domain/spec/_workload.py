"""The `workload` of a study spec: which model and dataset to train, checked against the
built-ins and the plugins registered on the server (passed in the validation context).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from service.domain.spec._errors import invalid

BUILTIN_MODELS = frozenset({"mlp", "cnn", "resnet"})
BUILTIN_DATASETS = frozenset({"digits", "mnist1d", "synthetic"})
DATASET_PREFIXES = ("npz:", "idx:", "csv:")


def _registered(info: ValidationInfo, key: str) -> frozenset[str]:
    """Names that the validation context adds to the built-ins (plugins on the server)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    return frozenset(context.get(key) or ())


class Workload(BaseModel):
    """What to train. Any extra key (`lr: 0.01`, `n_samples: 4000`, `seed: 1`) fixes a tunable
    or a dataset option; a parameter of the same name in `space` overrides it while active."""

    model_config = ConfigDict(extra="allow")

    model: str
    dataset: str
    optimizer: str = "adamw"
    """sgd or adamw; checked by `StudySpec` unless `optimizer` is searched in the space."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str, info: ValidationInfo) -> str:
        known = BUILTIN_MODELS | _registered(info, "models")
        if model not in known:
            raise invalid(f"unknown model '{model}'; the models are {', '.join(sorted(known))}")
        return model

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, dataset: str, info: ValidationInfo) -> str:
        for prefix in DATASET_PREFIXES:
            if dataset.startswith(prefix):
                if not dataset[len(prefix) :].strip():
                    raise invalid(f"dataset '{dataset}' needs a path after '{prefix}'")
                return dataset
        known = BUILTIN_DATASETS | _registered(info, "datasets")
        if dataset not in known:
            names = ", ".join(sorted(known))
            msg = f"unknown dataset '{dataset}'; use one of {names}, or npz:PATH, idx:DIR, csv:PATH"
            raise invalid(msg)
        return dataset
