"""The study spec: pydantic models of the document a user submits, and the rules across fields.

A spec that validates can run: every rule of docs/spec.md is checked by this package's private
modules (`_params`: each parameter of the space; `_workload`: model and dataset; `_study`: the
study as a whole and the rules across fields; `_document`: reading YAML/JSON; `_errors`: how a
broken rule becomes an error). What the rest of the server uses is imported from here. A broken
rule fails with a `pydantic.ValidationError` whose `loc` names the offending field
(``("space", "lr", "high")``, ``("strategy", "kind")``) and whose message says why in plain words.

Models and datasets registered on the server (plugins) are accepted through the validation
context; without one only the built-ins are::

    StudySpec.model_validate(data, context={"models": {"vit"}, "datasets": {"cifar10"}})
"""

from service.domain.spec._document import SpecDocumentError, load_spec_document
from service.domain.spec._initial import configuration_issues, initial_params
from service.domain.spec._params import (
    MAX_GRID_POINTS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
)
from service.domain.spec._study import (
    DEFAULT_MAX_TRIALS,
    MAX_TRIALS,
    OPTIMIZERS,
    Objective,
    StudySpec,
)
from service.domain.spec._workload import BUILTIN_DATASETS, BUILTIN_MODELS, DATASET_PREFIXES

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_MODELS",
    "DATASET_PREFIXES",
    "DEFAULT_MAX_TRIALS",
    "MAX_GRID_POINTS",
    "MAX_TRIALS",
    "OPTIMIZERS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Objective",
    "Param",
    "SpecDocumentError",
    "StudySpec",
    "configuration_issues",
    "initial_params",
    "load_spec_document",
]
