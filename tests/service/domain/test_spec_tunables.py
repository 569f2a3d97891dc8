"""The spec against the built-in trainer's tunables (hpo.tunables), table-driven over every
declared tunable: its edge values are accepted, the values just past them refused with the field
named and the allowed values in the message, in the workload and in the space alike."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpo.tunables import TUNABLES, Tunable
from service.domain.spec import StudySpec, load_spec_document

ROOT = Path(__file__).resolve().parents[3]


def spec(model: str, space: dict[str, Any] | None = None, **workload: Any) -> dict[str, Any]:
    return {
        "name": "tunables",
        "strategy": {"kind": "random"},
        "space": space or {"seed_only": {"type": "int", "low": 0, "high": 3}},
        "workload": {"model": model, "dataset": "digits", **workload},
    }


def model_of(tunable: Tunable) -> str:
    return tunable.models[0] if tunable.models else "mlp"


def edges(tunable: Tunable) -> tuple[list[Any], list[Any]]:
    """(values at or just inside each bound, values just outside it) for one tunable."""
    if tunable.type == "choice":
        return list(tunable.choices), ["magic"]
    if tunable.type == "bool":
        return [True, False], ["maybe", 1]
    inside: list[Any] = []
    outside: list[Any] = ["ten"]
    nudge = 1 if tunable.type == "int" else 1e-9
    for bound, is_open, sign in (
        (tunable.low, tunable.low_open, 1),
        (tunable.high, tunable.high_open, -1),
    ):
        if bound is None:
            continue
        edge = type(tunable.default or nudge)(bound)
        inside.append(edge + sign * nudge if is_open else edge)
        outside.append(edge if is_open else edge - sign * nudge)
    if tunable.odd:
        inside, outside = [1, 3], [*outside, 2]
    if tunable.nullable:
        inside.append(None)
    return inside, outside


CASES = [
    pytest.param(t, value, ok, id=f"{t.name}-{model_of(t)}={value!r}")
    for t in TUNABLES
    for ok, values in zip((True, False), edges(t), strict=True)
    for value in values
]


def refusal(data: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(data)
    first = caught.value.errors()[0]
    return first["loc"], first["msg"]


def assert_names_allowed(tunable: Tunable, msg: str) -> None:
    if tunable.type == "choice":  # the optimizer's own rule words it differently
        assert all(choice in msg for choice in tunable.choices), msg
    else:
        assert tunable.allowed() in msg, msg


@pytest.mark.parametrize(("tunable", "value", "ok"), CASES)
def test_a_fixed_value_in_the_workload(tunable: Tunable, value: Any, ok: bool) -> None:
    data = spec(model_of(tunable), **{tunable.name: value})
    if ok:
        StudySpec.model_validate(data)
        return
    loc, msg = refusal(data)
    assert loc == ("workload", tunable.name)
    assert_names_allowed(tunable, msg)


@pytest.mark.parametrize(("tunable", "value", "ok"), CASES)
def test_a_choice_in_the_space(tunable: Tunable, value: Any, ok: bool) -> None:
    param = {"type": "categorical", "choices": [value]}
    if value is None:
        return  # null is no categorical choice; grad_clip is left out of the space instead
    data = spec(model_of(tunable), {tunable.name: param})
    if ok:
        StudySpec.model_validate(data)
        return
    loc, msg = refusal(data)
    assert loc == ("space", tunable.name, "choices")
    assert_names_allowed(tunable, msg)


NUMERIC = [t for t in TUNABLES if t.type in ("int", "float")]


@pytest.mark.parametrize("tunable", NUMERIC, ids=[f"{t.name}-{model_of(t)}" for t in NUMERIC])
def test_a_range_in_the_space_is_checked_at_both_ends(tunable: Tunable) -> None:
    inside, outside = edges(tunable)
    numbers = sorted(v for v in inside if isinstance(v, int | float) and not isinstance(v, bool))
    low, high = numbers[0], (numbers[-1] if len(numbers) > 1 else numbers[0] + 64)
    if tunable.odd:
        low, high = 1, 7
    param = {"type": tunable.type, "low": low, "high": high, **({"step": 2} if tunable.odd else {})}
    StudySpec.model_validate(spec(model_of(tunable), {tunable.name: param}))
    for value in outside:
        if isinstance(value, str) or (tunable.odd and value == 2):
            continue
        end = "low" if value < low else "high"
        bad = {**param, end: value}
        if bad["low"] >= bad["high"]:
            continue
        loc, msg = refusal(spec(model_of(tunable), {tunable.name: bad}))
        assert loc == ("space", tunable.name, end)
        assert tunable.allowed() in msg


def test_an_even_kernel_size_in_a_range_is_refused() -> None:
    data = spec("cnn", {"kernel_size": {"type": "int", "low": 1, "high": 5}})
    loc, msg = refusal(data)
    assert loc == ("space", "kernel_size")
    assert "2, 4 are not allowed" in msg and "odd" in msg


def test_an_int_tunable_searched_as_a_float_range_is_refused() -> None:
    loc, msg = refusal(spec("mlp", {"batch_size": {"type": "float", "low": 16, "high": 256}}))
    assert loc == ("space", "batch_size", "type")
    assert "an integer >= 1" in msg


@pytest.mark.parametrize(
    ("model", "space", "workload", "loc", "words"),
    [
        ("cnn", {}, {"norm": "group", "groups": 5}, ("workload", "groups"), "5 does not"),
        (
            "cnn",
            {"groups": {"type": "int", "low": 2, "high": 8}},
            {"norm": "group"},
            ("space", "groups"),
            "3, 5, 6, 7 do not; choose among 1, 2, 4, 8, 16, 32",
        ),
        (
            "resnet",
            {"norm": {"type": "categorical", "choices": ["batch", "group"]}},
            {"channels": 12},
            ("workload", "channels"),
            "`channels` 12): 8 does not",
        ),
        (
            "mlp",
            {"width": {"type": "categorical", "choices": [64, 80]}},
            {"norm": "group", "groups": 32},
            ("workload", "groups"),
            "`width` 64, 80): 32 does not; choose among 1, 2, 4, 8, 16",
        ),
    ],
)
def test_group_counts_must_divide_every_layer_width(
    model: str, space: dict, workload: dict, loc: tuple, words: str
) -> None:
    got, msg = refusal(spec(model, space or None, **workload))
    assert got == loc
    assert words in msg


def test_group_counts_are_not_checked_without_group_norm() -> None:
    StudySpec.model_validate(spec("cnn", None, norm="batch", groups=5))


def test_plugin_models_are_not_checked_against_the_built_in_tunables() -> None:
    data = spec("vit", None, dropout=1.5, depth=-1)
    StudySpec.model_validate(data, context={"models": {"vit"}})


def test_the_readme_example_spec_is_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## The study spec\n\n```yaml\n(.*?)```", readme, re.S)
    assert block is not None
    spec_ = StudySpec.model_validate(load_spec_document(block.group(1)))
    assert spec_.workload.model == "cnn" and "groups" in spec_.space


PER_OPTIMIZER = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    "wd_sgd": {
        "type": "float",
        "low": 1e-6,
        "high": 1e-3,
        "log": True,
        "when": {"optimizer": "sgd"},
        "param": "weight_decay",
    },
    "wd_adamw": {
        "type": "float",
        "low": 1e-4,
        "high": 1e-1,
        "log": True,
        "when": {"optimizer": "adamw"},
        "param": "weight_decay",
    },
}


def test_each_optimizer_may_have_its_own_weight_decay_range() -> None:
    checked = StudySpec.model_validate(spec("mlp", PER_OPTIMIZER))
    assert checked.trainer_params({"optimizer": "sgd", "wd_sgd": 1e-4}) == {
        "optimizer": "sgd",
        "weight_decay": 1e-4,
    }


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        (
            {"wd_adamw": {**PER_OPTIMIZER["wd_adamw"], "when": {"optimizer": ["sgd", "adamw"]}}},
            ("space", "wd_sgd", "param"),
            "'wd_sgd' and 'wd_adamw' both set 'weight_decay'",
        ),
        (
            {"weight_decay": {"type": "float", "low": 0.0, "high": 0.1}},
            ("space", "wd_sgd", "param"),
            "'weight_decay' is a parameter of the space itself",
        ),
        (
            {"wd_sgd": {**PER_OPTIMIZER["wd_sgd"], "log": False, "low": -1e-3}},
            ("space", "wd_sgd", "low"),
            "`weight_decay` must be >= 0.0, got -0.001",
        ),
    ],
)
def test_a_param_set_twice_must_be_exclusive_and_within_the_tunable(
    change: dict[str, Any], loc: tuple[str, ...], words: str
) -> None:
    got, msg = refusal(spec("mlp", {**PER_OPTIMIZER, **change}))
    assert got == loc
    assert words in msg


def test_the_docs_per_optimizer_example_is_valid() -> None:
    text = (ROOT / "docs" / "spec.md").read_text()
    block = re.search(r"### One trainer param, two ranges\n.*?```yaml\n(.*?)```", text, re.S)
    assert block is not None
    space = load_spec_document(block.group(1))
    checked = StudySpec.model_validate(spec("cnn", space))
    assert {p.param for p in checked.space.values()} == {None, "lr", "weight_decay"}


def test_a_stored_spec_from_before_the_check_stays_readable() -> None:
    from service.domain import search

    document = {**spec("cnn", None, dropout=1.5), "strategy": {"kind": "random"}}
    with pytest.raises(ValidationError):
        StudySpec.model_validate(document)  # a new study like it is refused
    assert search.stored_spec(document).workload.model_extra == {"dropout": 1.5}
