"""The built-in trainer's tunables, declared once: name, type, allowed values, default, what
they apply to and what they do.

The trainer reads its params through this declaration (`trainer.params.Params.tunable`), the
server checks every spec against it before it creates a study (`service.domain.spec`), the API
lists it (`GET /api/v1/tunables`) and docs/trainer.md's tunables table is generated from it
(`markdown_table`; a test fails when they differ). Torch-free, like the rest of `hpo`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

BUILTIN_MODELS = ("mlp", "cnn", "resnet")

TunableType = Literal["float", "int", "bool", "choice"]


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _tuple_values(value: Any) -> Any:
    return {key: _tuple(item) for key, item in value.items()} if isinstance(value, dict) else value


# A JSON array arrives as a list: taken as the tuple the (strict, frozen) model keeps.
Names = Annotated[tuple[str, ...], BeforeValidator(_tuple)]


class Tunable(BaseModel):
    """One param the built-in trainer reads. Bounds are inclusive unless `low_open` /
    `high_open`; `models` empty means the training loop's own param, read for every model."""

    # Strict: plugins' declarations arrive in worker registrations, and a flag must be a JSON
    # boolean and a bound a number (not 0 for false, nor false for 0), as their schema says.
    model_config = ConfigDict(frozen=True, strict=True)

    name: str
    type: TunableType
    default: Any = Field(description="the value when neither the space nor the workload sets it")
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = Field(False, description="`low` itself is not allowed")
    high_open: bool = Field(False, description="`high` itself is not allowed")
    choices: Names = ()
    odd: bool = Field(False, description="only odd integers")
    nullable: bool = Field(False, description="null means off")
    models: Names = Field((), description="the models that read it; empty: all")
    when: Annotated[dict[str, tuple[str, ...]], BeforeValidator(_tuple_values)] = Field(
        default_factory=dict,
        description="read only when these other tunables have one of these values",
    )

    def coerce(self, value: Any) -> Any:
        """`value` as the trainer uses it: an integral float for an int (YAML, JSON and
        samplers give 64.0), 'true'/'false' for a bool; anything else unchanged."""
        if self.type == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if self.type == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value

    def problem(self, value: Any) -> str | None:
        """Why `value` (coerced) is not allowed, as "must be ..., got ...", or None if it is."""
        value = self.coerce(value)
        if value is None and self.nullable:
            return None
        if self.type == "choice":
            if value not in self.choices:
                return f"must be one of {list(self.choices)}, got {value!r}"
            return None
        if self.type == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"must be an integer, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        return self._bound_problem(value)

    def _bound_problem(self, value: float) -> str | None:
        low, high = self._shown(self.low), self._shown(self.high)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {low}, got {value}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {high}, got {value}"
        if self.odd and value % 2 == 0:
            return f"must be odd (same padding), got {value}"
        return None

    def _shown(self, bound: float | None) -> int | float | None:
        return int(bound) if self.type == "int" and bound is not None else bound

    def allowed(self) -> str:
        """The allowed values in words: "a number > 0", "an integer >= 1, odd", "one of ..."."""
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type == "bool":
            return "true or false"
        parts = ["an integer" if self.type == "int" else "a number"]
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self._shown(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self._shown(self.high)}")
        text = " and ".join([f"{parts[0]} {parts[1]}", *parts[2:]]) if len(parts) > 1 else parts[0]
        if self.odd:
            text += ", odd"
        if self.nullable:
            text += ", or null (off)"
        return text

    def applies_to(self) -> str:
        """Which models, optimizers or norms read it, in words."""
        scopes = [f"model {' / '.join(self.models)}"] if self.models else []
        scopes += [f"{key} {' / '.join(values)}" for key, values in self.when.items()]
        return ", ".join(scopes) or "all"


def _t(name: str, type_: TunableType, default: Any, description: str, **rest: Any) -> Tunable:
    return Tunable(name=name, type=type_, default=default, description=description, **rest)


_CONV = ("cnn", "resnet")
NORMS = ("none", "batch", "layer", "group", "instance", "weight", "selu")

TUNABLES: tuple[Tunable, ...] = (
    # the training loop
    _t("optimizer", "choice", "adamw", "the optimizer", choices=("adamw", "sgd")),
    _t("lr", "float", 1e-3, "peak learning rate", low=0.0, low_open=True),
    _t(
        "weight_decay",
        "float",
        0.0,
        "on linear/conv weights only: decoupled for adamw, coupled L2 for sgd",
        low=0.0,
    ),
    _t(
        "momentum",
        "float",
        0.9,
        "SGD momentum",
        low=0.0,
        high=1.0,
        high_open=True,
        when={"optimizer": ("sgd",)},
    ),
    _t(
        "nesterov",
        "bool",
        False,
        "Nesterov momentum (needs momentum > 0)",
        when={"optimizer": ("sgd",)},
    ),
    _t(
        "beta1",
        "float",
        0.9,
        "AdamW's decay rate of the gradient's running mean",
        low=0.0,
        high=1.0,
        high_open=True,
        when={"optimizer": ("adamw",)},
    ),
    _t(
        "beta2",
        "float",
        0.999,
        "AdamW's decay rate of the squared gradient's running mean",
        low=0.0,
        high=1.0,
        high_open=True,
        when={"optimizer": ("adamw",)},
    ),
    _t("batch_size", "int", 64, "training batch size", low=1),
    _t("warmup_epochs", "float", 0.0, "linear warm-up to lr over this many epochs", low=0.0),
    _t(
        "lr_schedule",
        "choice",
        "cosine",
        "after warm-up: cosine decay to 0 at the last epoch, or constant",
        choices=("cosine", "constant"),
    ),
    _t(
        "grad_clip",
        "float",
        None,
        "clip the gradients' global L2 norm to this",
        low=0.0,
        low_open=True,
        nullable=True,
    ),
    _t("checkpoint_every", "int", 1, "save a checkpoint every k epochs", low=1),
    _t(
        "checkpoint_seconds",
        "float",
        10.0,
        "of the epochs `checkpoint_every` selects, checkpoint only those ending at least this "
        "many seconds of training after the last checkpoint (0: every one); a rung's end always",
        low=0.0,
    ),
    # the models
    _t("norm", "choice", "none", "normalization of every hidden layer", choices=NORMS),
    _t(
        "groups",
        "int",
        8,
        "group norm's group count; must divide every layer's width",
        low=1,
        when={"norm": ("group",)},
    ),
    _t(
        "dropout",
        "float",
        0.0,
        "dropout rate (alpha dropout with selu)",
        low=0.0,
        high=1.0,
        high_open=True,
        models=BUILTIN_MODELS,
    ),
    _t("depth", "int", 2, "hidden layers", low=0, models=("mlp",)),
    _t("width", "int", 128, "units per hidden layer", low=1, models=("mlp",)),
    _t("depth", "int", 3, "conv blocks", low=1, models=("cnn",)),
    _t("channels", "int", 32, "channels of every conv layer", low=1, models=("cnn",)),
    _t("kernel_size", "int", 3, "convolution kernel size", low=1, odd=True, models=("cnn",)),
    _t("depth", "int", 1, "residual blocks per stage", low=1, models=("resnet",)),
    _t(
        "channels",
        "int",
        16,
        "channels of the first stage (x2, x4 in the next)",
        low=1,
        models=("resnet",),
    ),
)

WIDTH_PARAM = {"mlp": "width", "cnn": "channels", "resnet": "channels"}
"""The tunable every layer width of a built-in model is a multiple of (the ResNet's stages
have x1, x2 and x4 of it), so a group count divides every width when it divides this one."""


def find(name: str, model: str | None = None) -> Tunable | None:
    """The declaration of `name` as `model` reads it (a model's own first), or None when the
    built-in trainer does not read `name` for that model."""
    general = None
    for tunable in TUNABLES:
        if tunable.name != name:
            continue
        if model in tunable.models:
            return tunable
        if not tunable.models:
            general = tunable
    return general


def choices(name: str) -> tuple[str, ...]:
    """The choices of the choice tunable `name` (optimizer, norm, lr_schedule)."""
    declared = find(name)
    if declared is None or declared.type != "choice":
        raise KeyError(f"{name!r} is not a declared choice tunable")
    return declared.choices


def for_model(model: str) -> list[Tunable]:
    """Every tunable the built-in trainer reads when training `model`."""
    return [t for t in TUNABLES if not t.models or model in t.models]


def group_problem(groups: int, width: int) -> str | None:
    """Why `groups` cannot split a layer of `width` channels, or None if it divides it."""
    if width % groups:
        return f"groups={groups} does not divide {width} channels"
    return None


def markdown_table() -> str:
    """docs/trainer.md's table of the tunables, one row per declaration."""
    rows = [
        "| param | type | default | allowed | read for | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in TUNABLES:
        default = "null" if t.default is None else _yaml(t.default)
        rows.append(
            f"| `{t.name}` | {t.type} | `{default}` | {t.allowed()} | {t.applies_to()} "
            f"| {t.description} |"
        )
    return "\n".join(rows) + "\n"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
