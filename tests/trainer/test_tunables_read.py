"""The trainer reads its params through hpo.tunables: every declared tunable is read for the
models that declare it, with the declared default."""

from __future__ import annotations

import pytest

from hpo import tunables
from trainer.models import build_model
from trainer.optim import LoopParams
from trainer.params import Params


@pytest.mark.parametrize("model", tunables.BUILTIN_MODELS)
def test_every_declared_tunable_is_read_with_its_default(model: str) -> None:
    # sgd and group norm, so that momentum, nesterov and groups are read too
    params = Params({"optimizer": "sgd", "norm": "group", "groups": 4})
    loop = LoopParams.from_params(params)
    build_model(model, (1, 8, 8), 3, params)
    params.tunable("checkpoint_every")
    params.tunable("checkpoint_seconds")
    adamw = Params({})  # beta1 and beta2 are read for adamw
    assert LoopParams.from_params(adamw).betas == (0.9, 0.999)
    assert params.used | adamw.used >= {t.name for t in tunables.for_model(model)}
    assert (loop.lr, loop.momentum, loop.batch_size, loop.lr_schedule) == (1e-3, 0.9, 64, "cosine")
    assert loop.grad_clip is None and loop.weight_decay == 0.0


def test_a_plugin_sends_the_tunables_its_model_declares() -> None:
    from trainer.plugins import Plugins

    def build(shape: tuple[int, ...], n_classes: int, options: dict) -> None:
        raise AssertionError("not built here")

    build.tunables = [  # type: ignore[attr-defined]
        {"name": "hidden", "type": "int", "default": 64, "low": 1, "description": "units"}
    ]
    caps = Plugins(models={"tiny": build, "plain": print}).capabilities()
    assert caps["models"] == ["plain", "tiny"]
    [declared] = caps["tunables"]
    assert (declared["name"], declared["models"], declared["low"]) == ("hidden", ["tiny"], 1.0)
    assert "tunables" not in Plugins(models={"plain": print}).capabilities()
